"""playbooks: see docs/architecture.md."""
