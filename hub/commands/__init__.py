"""CLI command modules; each exposes COMMANDS (see hub/plugins.py)."""
