"""The rules engine: YAML rules (loader, conditions) evaluated on committed events
(engine, service) into alerts (alerts), the payloads that describe them to webhooks and
Alertmanager (notify, sent by hub.notify), and rule unit tests (testing)."""

from hub.rules.alerts import decode as decode_alert
from hub.rules.loader import load_paths
from hub.rules.notify import alertmanager_payload, webhook_payload
from hub.rules.web import SERVICE, rule_paths

__all__ = ["SERVICE", "alertmanager_payload", "decode_alert", "load_paths", "rule_paths",
           "webhook_payload"]
