"""backup: see docs/architecture.md."""
