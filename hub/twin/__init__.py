"""twin: see docs/architecture.md."""
