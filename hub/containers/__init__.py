"""Containers on each node (agent/collectors/containers.py) projected into ``containers`` (the
current state) and ``container_changes`` (history). See docs/containers.md."""
