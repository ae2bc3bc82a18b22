"""profiles: see docs/architecture.md."""
