"""The hub's own web pages: the fleet at a glance and every node's history (docs/dashboard.md)."""
