"""homelab-agent: the per-node agent of Sentient Homelab. Never imports ``hub``."""

__version__ = "0.1.0"
