"""tailnet: Tailscale identity of nodes and the tailnet's devices (docs/fleet.md)."""

from hub.tailnet.local import local_address, localapi_status

__all__ = ["local_address", "localapi_status"]
