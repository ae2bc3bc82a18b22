"""onboarding: what a new machine fetches from the hub to join (docs/onboarding.md)."""

from hub.onboarding.script import one_liner, plain_http_risk

__all__ = ["one_liner", "plain_http_risk"]
