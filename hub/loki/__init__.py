"""loki: see docs/architecture.md."""
