"""playbooks: the registry of shell playbooks the hub may propose (see docs/playbooks.md)."""

from hub.playbooks.registry import Registry

__all__ = ["Registry"]
