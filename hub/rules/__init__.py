"""The rules engine: YAML rules (loader, conditions) evaluated on committed events
(engine, service) into alerts (alerts) that notify (notify) and are unit-tested (testing)."""

from hub.rules.web import SERVICE

__all__ = ["SERVICE"]
