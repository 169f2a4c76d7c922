"""Synthetic, labelled IoT captures in the spirit of CICIoT2023 (``ids-trainer synth``).

`generate_corpus` writes one classic pcap (Ethernet) per scenario and a
``manifest.json`` that labels each file, exactly as the dataset labels its
captures: a file holds one attack's traffic (attacker and victim packets, the
victim's replies included) or benign traffic only. The trainer reads the
manifest; a user can write the same manifest for their own captures::

    {"version": 1, "generator": "ids-trainer synth", "seed": 0,
     "files": [{"path": "DDoS-SYN_Flood-000.pcap", "label": "DDoS-SYN_Flood", "packets": 2400,
                "description": "spoofed-source SYN flood on 192.168.7.23:80 at ~8000 pkt/s, ..."}]}

Paths are relative to the manifest. The same seed gives byte-identical files; each
file depends only on (seed, label, file number, packet budget), so restricting
``classes`` does not change the files of the classes kept (at equal budgets).

The network model follows the CICIoT2023 testbed (IoT devices, brokers, hubs and cloud
servers, attackers and Mirai bots inside the LAN) but every file is its own site: it
draws its LAN (a /22-/25 of 192.168/16, 10/8 or 172.16/12), the hosts' stacks (initial
TTL, window, MSS, TCP options, ephemeral ports), hops, loss, service ports, rates, sizes
and the benign device mix (IoT telemetry, cameras, video calls, app polling, browsing,
SSH, industrial polling, ARP/mDNS/SSDP/DHCP chatter), so no TTL, subnet, port or size
marks a class. The file number rotates each scenario's main variant (benign: the site
kind; attacks: fixed or random ports, spoofed or real sources, tool), so a train/test
split by file is meaningful. Benign files run at tens to hundreds of packets per
second, scans at hundreds, floods at thousands.

Classes (27 of the 34): BenignTraffic; DDoS-SYN_Flood, DDoS-ACK_Fragmentation,
DDoS-UDP_Flood, DDoS-UDP_Fragmentation, DDoS-ICMP_Flood, DDoS-ICMP_Fragmentation,
DDoS-RSTFINFlood, DDoS-PSHACK_Flood, DDoS-TCP_Flood, DDoS-SynonymousIP_Flood,
DDoS-HTTP_Flood, DDoS-SlowLoris; DoS-SYN_Flood, DoS-UDP_Flood, DoS-TCP_Flood,
DoS-HTTP_Flood; Mirai-greeth_flood, Mirai-greip_flood, Mirai-udpplain;
Recon-PortScan, Recon-OSScan, Recon-HostDiscovery, Recon-PingSweep;
MITM-ArpSpoofing, DNS_Spoofing; DictionaryBruteForce.

Not generated: BrowserHijacking, CommandInjection, SqlInjection, XSS,
Backdoor_Malware, Uploading_Attack and VulnerabilityScan. What tells them apart from
ordinary web traffic is in the HTTP payload (a script tag, a SQL fragment, an
uploaded file, a scanner's request paths); the 46 CICIoT2023 features are computed
from headers, sizes, flags and timing only, so a synthetic file of them would be a
plain HTTP session labelled at random. Train those classes from the dataset's CSVs.

Frames are built by `trainer.synth.wire` (struct-packed, checksums computed), not by
scapy, which is about a hundred times slower per packet.
"""

from .generator import SKIPPED_CLASSES, SYNTH_CLASSES, generate_corpus, generate_file, plan

__all__ = ["SKIPPED_CLASSES", "SYNTH_CLASSES", "generate_corpus", "generate_file", "plan"]
