"""tailnet: see docs/architecture.md."""
