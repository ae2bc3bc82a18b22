"""Hub feature modules; each exposes setup(app) (see hub/plugins.py)."""
