"""backup: backup and restore of a hub, and the lock a running hub holds (docs/onboarding.md)."""

from hub.backup.archive import LOCK_NAME
from hub.backup.web import archives

__all__ = ["LOCK_NAME", "archives"]
