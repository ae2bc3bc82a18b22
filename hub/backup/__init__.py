"""backup: backup and restore of a hub, and the lock a running hub holds (docs/onboarding.md)."""

from hub.backup.archive import LOCK_NAME, lock_holder
from hub.backup.web import archives

__all__ = ["LOCK_NAME", "archives", "lock_holder"]
