"""twin: each node's current state and its history (docs/twin.md).

Read it through ``Twin`` (one node) and ``changes`` (any nodes): hub/twin/read.py."""

from hub.twin.activity import EVENT_DATA
from hub.twin.read import CHANGE_KINDS, Twin, changes, mount_usage

__all__ = ["CHANGE_KINDS", "EVENT_DATA", "Twin", "changes", "mount_usage"]
