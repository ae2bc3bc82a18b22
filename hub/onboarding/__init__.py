"""onboarding: see docs/architecture.md."""
