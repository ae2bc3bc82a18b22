"""Devices: add, remove and change events (USB sticks, disks, network interfaces, loop
devices ...) with subsystem, vendor/model, serial, driver and device node.

Events come from a netlink socket, integrated with asyncio through its file descriptor
(``loop.add_reader``), so the collector sleeps until the kernel has something to say.
Where udevd runs (``/run/udev/control`` exists) the udev source is used: its events come
after udev's rules, with the hardware database's vendor and model names. Where it does not
(containers, minimal systems, this project's CI) the kernel source is used and the names
are read from sysfs attributes instead (USB ``manufacturer``/``product``, block
``device/vendor``/``device/model``, PCI vendor/device ids).

At start the current devices are compared with the set saved in ``state.db``: what was
plugged in or pulled out while the agent was stopped is reported as ``add``/``remove``; on
the very first start each device is reported once as ``present`` (the hub's baseline).
Only ``device_subsystems`` are reported (default: the ones a person plugs or configures;
``*`` for all): a veth pair alone makes twenty kernel events, sixteen of them queues.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from agent import wire
from agent.collectors import Collector

log = logging.getLogger(__name__)

STATE_KEY = "devices.present"
SAVE_DELAY = 2.0  # seconds: a burst of events is saved to state.db once
PARENT_DEPTH = 4  # how far up the device tree names and drivers are looked for


def _attr(dev: Any, name: str) -> str | None:
    try:
        v = dev.attributes.get(name)
    except (OSError, KeyError, UnicodeDecodeError):
        return None
    if v is None:
        return None
    s = (v.decode(errors="replace") if isinstance(v, bytes) else str(v)).strip()
    return s or None


def _prop(dev: Any, *names: str) -> str | None:
    props = dev.properties
    for n in names:
        v = props.get(n)
        if v:
            return v.replace("\\x20", " ").strip() or None
    return None


def _lineage(dev: Any):
    """The device and its first few ancestors (where vendor names and drivers live)."""
    d, n = dev, 0
    while d is not None and n <= PARENT_DEPTH:
        yield d
        try:
            d = d.parent
        except (OSError, ValueError):
            return
        n += 1


def describe(dev: Any, action: str, source: wire.DeviceSource) -> wire.Device:
    """A Device event from a pyudev device (from the monitor or from enumeration)."""
    vendor = _prop(dev, "ID_VENDOR_FROM_DATABASE", "ID_VENDOR_ENC", "ID_VENDOR")
    model = _prop(dev, "ID_MODEL_FROM_DATABASE", "ID_MODEL_ENC", "ID_MODEL")
    serial = _prop(dev, "ID_SERIAL_SHORT")
    bus = _prop(dev, "ID_BUS")
    driver = None
    if action != "remove":  # a removed device is gone from sysfs: nothing more to read
        for d in _lineage(dev):
            driver = driver or d.driver
            sub = d.subsystem
            if sub in ("usb", "pci", "scsi", "virtio", "nvme", "mmc", "hid", "sdio") and d is not dev:
                bus = bus or sub
            if not vendor:
                vendor = _attr(d, "manufacturer") or _attr(d, "vendor") or _attr(d, "idVendor")
            if not model:
                model = _attr(d, "product") or _attr(d, "model") or _attr(d, "idProduct") or (
                    _attr(d, "device") if sub == "pci" else None)
            if not serial:
                serial = _attr(d, "serial")
            if driver and vendor and model:
                break
    return wire.Device(
        ts=time.time(), action=action, subsystem=dev.subsystem or "?", sys_path=dev.device_path,
        devtype=dev.device_type, dev_node=dev.device_node, vendor=vendor, model=model,
        serial=serial, driver=driver, bus=bus, source=source,
        old_sys_path=dev.properties.get("DEVPATH_OLD") if action == "move" else None,
    )


class DevicesCollector(Collector):
    name = "devices"

    def __init__(self, settings, emit, state):
        super().__init__(settings, emit, state)
        subs = [s.strip() for s in settings.device_subsystems if s.strip()]
        if not subs:
            raise ValueError("device_subsystems is empty: list subsystems, or '*' for all")
        self.all = "*" in subs
        self.subsystems = frozenset(subs)
        self.source: wire.DeviceSource = "udev" if os.path.exists("/run/udev/control") else "kernel"
        self.monitor: Any = None
        self.present: dict[str, str] = {}  # device path -> subsystem
        self._save: asyncio.TimerHandle | None = None

    @classmethod
    def unavailable(cls, settings) -> str | None:
        try:
            import pyudev  # noqa: F401
        except ImportError as e:
            return f"pyudev cannot be loaded ({e})"
        if not os.path.isdir("/sys/class"):
            return "no sysfs at /sys"
        return None

    def wanted(self, subsystem: str | None) -> bool:
        return self.all or subsystem in self.subsystems

    def scan(self, context) -> dict[str, Any]:
        found = {}
        if self.all:
            devices = context.list_devices()
        else:
            devices = (d for s in sorted(self.subsystems) for d in context.list_devices(subsystem=s))
        for d in devices:
            found[d.device_path] = d
        return found

    def reconcile(self, context) -> None:
        """Compare what is plugged in now with what was last saved; report the difference."""
        now = self.scan(context)
        saved = self.state.get(STATE_KEY)
        first = saved is None
        saved = saved or {}
        for path in sorted(now):
            if path not in saved:
                self.emit(describe(now[path], "present" if first else "add", self.source))
        for path in sorted(set(saved) - set(now)):
            if self.wanted(saved[path]):
                self.emit(wire.Device(ts=time.time(), action="remove", subsystem=saved[path],
                                      sys_path=path, source=self.source))
        self.present = {p: d.subsystem or "?" for p, d in now.items()}
        self.state.set(STATE_KEY, self.present)

    def on_readable(self) -> None:
        changed = False
        while True:
            dev = self.monitor.poll(timeout=0)
            if dev is None:  # pyudev Devices are Mappings: never test them for truth
                break
            if not self.wanted(dev.subsystem):
                continue
            action = dev.action or "change"
            self.emit(describe(dev, action, self.source))
            if action == "remove":
                changed |= self.present.pop(dev.device_path, None) is not None
                continue
            if action == "move":  # renamed: the old path is gone
                changed |= self.present.pop(dev.properties.get("DEVPATH_OLD", ""), None) is not None
            if dev.device_path not in self.present:
                self.present[dev.device_path] = dev.subsystem or "?"
                changed = True
        if changed and self._save is None:
            self._save = asyncio.get_running_loop().call_later(SAVE_DELAY, self.save)

    def save(self) -> None:
        self._save = None
        self.state.set(STATE_KEY, self.present)

    async def run(self) -> None:
        import pyudev

        context = pyudev.Context()
        self.monitor = pyudev.Monitor.from_netlink(context, source=self.source)
        self.monitor.start()  # before the scan, so nothing falls between the two
        self.reconcile(context)
        loop = asyncio.get_running_loop()
        fd = self.monitor.fileno()
        loop.add_reader(fd, self.on_readable)
        log.info("devices: %s events, %d devices present", self.source, len(self.present))
        try:
            await asyncio.Event().wait()
        finally:
            loop.remove_reader(fd)
            if self._save is not None:
                self._save.cancel()
                self.save()
            self.monitor = None
