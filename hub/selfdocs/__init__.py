"""selfdocs: see docs/architecture.md."""
