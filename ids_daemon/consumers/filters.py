"""What a ``filter`` response stops: packet classes by protocol and flags, the filters
named by them, and the attack classes whose floods each filter stops (docs/rl.md).

A plain module (no numpy, no torch) so that the observation builder, the policy runtime
and the environment read the same names.
"""

from __future__ import annotations

# The packet classes a filter matches, disjoint (`ids_daemon.consumers.response.packet_class`
# computes them): a TCP segment with SYN and without ACK (a connection's first packet,
# what a SYN flood sends), any other TCP segment, UDP, ICMP or ICMPv6, GRE, anything else.
PACKET_CLASSES = ("other", "tcp-syn", "tcp-other", "udp", "icmp", "gre")
# A filter's name -> the packet classes it stops (inbound to the host only)
FILTERS: dict[str, tuple[str, ...]] = {"tcp-syn": ("tcp-syn",), "tcp": ("tcp-syn", "tcp-other"), "udp": ("udp",),
                                       "icmp": ("icmp",), "gre": ("gre",)}
# An attack class -> the filter that stops its flood. The flood classes are named by their
# packets' protocol and flags (CICIoT2023's taxonomy; the flood, volume and reflection
# detectors use the same names); a TCP flood of other or mixed flags (ACK, PSH-ACK,
# RST/FIN, fragments) filters all TCP. Classes not listed (HTTP floods and slowloris, whose
# packets are ordinary TCP sessions; scans, spoofing, web attacks, brute force) name no
# packet class: a filter there is a block.
FLOOD_FILTER: dict[str, str] = {
    "DDoS-SYN_Flood": "tcp-syn", "DoS-SYN_Flood": "tcp-syn", "DDoS-SynonymousIP_Flood": "tcp-syn",
    "DDoS-TCP_Flood": "tcp", "DoS-TCP_Flood": "tcp", "DDoS-PSHACK_Flood": "tcp", "DDoS-RSTFINFlood": "tcp",
    "DDoS-ACK_Fragmentation": "tcp",
    "DDoS-UDP_Flood": "udp", "DoS-UDP_Flood": "udp", "DDoS-UDP_Fragmentation": "udp", "Mirai-udpplain": "udp",
    "DDoS-ICMP_Flood": "icmp", "DDoS-ICMP_Fragmentation": "icmp",
    "Mirai-greeth_flood": "gre", "Mirai-greip_flood": "gre",
}
