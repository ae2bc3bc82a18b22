"""proposals: from a firing alert to a fix that ran, with a person's approval (docs/playbooks.md)."""

from hub.proposals.state import create, os_user, record_request

__all__ = ["create", "os_user", "record_request"]
