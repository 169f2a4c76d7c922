"""The alerting consumer: predictions in, de-duplicated and rate-limited alerts out
(see `engine` for how predictions become alerts)."""

from .alert import ALERT_SCHEMA, Alert, AlertStats, OutputStats
from .config import (AlertConfig, EveOutputConfig, JsonlOutputConfig, StdoutOutputConfig, SyslogOutputConfig,
                     WebhookOutputConfig, facility_code)
from .engine import AlertEngine, run_alerts
from .eve import EveOutput, eve_record
from .outputs import AlertOutput, JsonlOutput, StdoutOutput, SyslogOutput, WebhookOutput, build_outputs, format_rfc5424

__all__ = ["ALERT_SCHEMA", "Alert", "AlertConfig", "AlertEngine", "AlertOutput", "AlertStats", "EveOutput",
           "EveOutputConfig", "JsonlOutput", "JsonlOutputConfig", "OutputStats", "StdoutOutput", "StdoutOutputConfig",
           "SyslogOutput",
           "SyslogOutputConfig", "WebhookOutput", "WebhookOutputConfig", "build_outputs", "eve_record", "facility_code",
           "format_rfc5424", "run_alerts"]
