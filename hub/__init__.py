"""homelab-hub: the central hub of Sentient Homelab."""
