"""proposals: see docs/architecture.md."""
