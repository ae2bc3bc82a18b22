"""Projection modules; each registers handlers with hub.project.handles (see hub/plugins.py)."""
