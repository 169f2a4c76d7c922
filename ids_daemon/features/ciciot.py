"""The 46 CICIoT2023 columns (original release), in CSV order, and which ones leak.

What each column holds is documented in docs/features.md (from the released data's
extractor, quirks included); the meter computes exactly that.
"""

from __future__ import annotations

COLUMNS: tuple[str, ...] = (
    "flow_duration", "Header_Length", "Protocol Type", "Duration", "Rate", "Srate", "Drate",
    "fin_flag_number", "syn_flag_number", "rst_flag_number", "psh_flag_number", "ack_flag_number",
    "ece_flag_number", "cwr_flag_number",
    "ack_count", "syn_count", "fin_count", "urg_count", "rst_count",
    "HTTP", "HTTPS", "DNS", "Telnet", "SMTP", "SSH", "IRC", "TCP", "UDP", "DHCP", "ARP", "ICMP",
    "IPv", "LLC",
    "Tot sum", "Min", "Max", "AVG", "Std", "Tot size", "IAT", "Number",
    "Magnitue", "Radius", "Covariance", "Variance", "Weight",
)
assert len(COLUMNS) == 46

INDEX: dict[str, int] = {name: i for i, name in enumerate(COLUMNS)}

# Columns a model must not see by default (see docs/features.md): IAT carries the
# capture date, Number and Weight the dataset's per-class block size, Drate and LLC
# are constant or redundant, Srate duplicates Rate.
LEAKING: tuple[str, ...] = ("IAT", "Number", "Weight", "Drate", "LLC", "Srate")

# Identity columns written after the 46 features by `ids-daemon features`.
IDENTITY_COLUMNS: tuple[str, ...] = (
    "first_ts", "last_ts", "window_key", "protocol", "src_ip", "src_port", "dst_ip", "dst_port",
    "packets", "close_reason",
)
