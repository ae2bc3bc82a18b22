"""Listening sockets per process (what osquery calls listening_ports), every processes_interval.

Read straight from the kernel: ``/proc/net/{tcp,tcp6,udp,udp6}`` list every socket with its
inode, and ``/proc/PID/fd`` links (``socket:[INODE]``) say which process holds it. TCP sockets
in LISTEN and UDP sockets with no peer are "listening". A process whose fds this agent may not
read (no CAP_SYS_PTRACE, another user) still shows its socket, with no process named.

Reported as a ``wire.Facts`` snapshot keyed ``proto address:port`` and sent only when it
differs from the last one sent, so the hub's ``twin_fact_changes`` says when a port opened or
closed and who held it.
"""

from __future__ import annotations

import asyncio
import os
import time

from agent import wire
from agent.collectors import Collector
from agent.users import user_name

TABLES = {"tcp": "/proc/net/tcp", "tcp6": "/proc/net/tcp6", "udp": "/proc/net/udp",
          "udp6": "/proc/net/udp6"}
LISTEN = {"tcp": "0A", "tcp6": "0A", "udp": "07", "udp6": "07"}
MAX_ITEMS = 5000  # a bound on one snapshot; a node with more sockets than this is reported cut


def _address(hexaddr: str) -> str:
    """The kernel's hex (host byte order per 32-bit word) into a printable address."""
    raw = bytes.fromhex(hexaddr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return ".".join(str(b) for b in words)
    import ipaddress

    return str(ipaddress.IPv6Address(words))


def listening(proc: str = "/proc") -> dict[str, dict]:
    """{"tcp 0.0.0.0:22": {"proto", "address", "port", "inode", "uid", "user"}}, no owners yet."""
    found: dict[str, dict] = {}
    for proto, path in TABLES.items():
        try:
            with open(path.replace("/proc", proc, 1)) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue  # no IPv6 on this kernel, say
        for line in lines:
            parts = line.split()
            if len(parts) < 10 or parts[3] != LISTEN[proto]:
                continue
            local, _, port_hex = parts[1].rpartition(":")
            remote = parts[2].rpartition(":")[0]
            if proto.startswith("udp") and int(remote, 16) != 0:
                continue  # a connected UDP socket is a client, not a listener
            address, port = _address(local), int(port_hex, 16)
            shown = f"[{address}]" if ":" in address else address
            found[f"{proto} {shown}:{port}"] = {
                "proto": proto, "address": address, "port": port, "inode": int(parts[9]),
                "user": user_name(int(parts[7])),
            }
            if len(found) >= MAX_ITEMS:
                return found
    return found


def owners(inodes: set[int], proc: str = "/proc") -> dict[int, tuple[int, str]]:
    """inode -> (pid, process name) for the given socket inodes."""
    want = {f"socket:[{i}]": i for i in inodes}
    out: dict[int, tuple[int, str]] = {}
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"{proc}/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                inode = want.get(os.readlink(f"{proc}/{pid}/fd/{fd}"))
            except OSError:
                continue
            if inode is not None and inode not in out:
                try:
                    with open(f"{proc}/{pid}/comm") as f:
                        out[inode] = (int(pid), f.read().strip())
                except OSError:
                    out[inode] = (int(pid), "")
        if len(out) == len(want):
            break
    return out


def snapshot(proc: str = "/proc") -> dict[str, dict]:
    items = listening(proc)
    held = owners({v["inode"] for v in items.values()}, proc)
    for item in items.values():
        pid, name = held.get(item.pop("inode"), (None, None))
        item["pid"], item["process"] = pid, name
    return items


class SocketsCollector(Collector):
    name = "sockets"

    def __init__(self, settings, emit, state):
        super().__init__(settings, emit, state)
        if settings.processes_interval < 1:
            raise ValueError(f"processes_interval must be at least 1s, got {settings.processes_interval}")
        self.interval = settings.processes_interval

    @classmethod
    def unavailable(cls, settings) -> str | None:
        return None if os.path.exists("/proc/net/tcp") else "no /proc/net/tcp"

    async def run(self) -> None:
        last: dict | None = None
        while True:
            items = snapshot()
            if items != last:
                self.emit(wire.Facts(ts=time.time(), source=self.name, items=items))
                last = items
            await asyncio.sleep(self.interval)
