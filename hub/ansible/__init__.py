"""ansible: see docs/architecture.md."""
