"""The rules engine: YAML rules (loader, conditions) evaluated on committed events
(engine, service) into alerts (alerts) that notify (notify) and are unit-tested (testing)."""

from hub.rules.loader import load_paths
from hub.rules.web import SERVICE, rule_paths

__all__ = ["SERVICE", "load_paths", "rule_paths"]
