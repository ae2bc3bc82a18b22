"""ansible: see docs/architecture.md.

``fold_file_history`` is what the hub's retention calls before a file's old history expires."""

from hub.ansible.history import fold_history as fold_file_history

__all__ = ["fold_file_history"]
