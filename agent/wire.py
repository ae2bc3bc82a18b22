"""The wire format shared by agent and hub.

Events are frozen msgspec Structs in one tagged union (the tag field is ``kind``).
A node encodes each event once, when it is spooled; batches embed those bytes as
``msgspec.Raw`` so nothing is re-encoded on the way out. The hub decodes a batch in
two steps (frame, then each event) so that one unknown or malformed event is named
precisely and a newer agent's new kinds do not wedge an older hub.

This module must not import anything from ``hub``: the agent ships alone.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

import msgspec

WIRE_VERSION = 1

# Hard limits. A frame over any of them is refused as a whole (the hub answers 4xx).
MAX_BATCH_BYTES = 8 * 1024 * 1024
MAX_BATCH_EVENTS = 10_000
KIND_RE = re.compile(r"^[a-z][a-z0-9_.]{0,31}$")

Str = Annotated[str, msgspec.Meta(max_length=4096)]
Text = Annotated[str, msgspec.Meta(max_length=256 * 1024)]
NodeName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
# Numbers SQLite can hold and arithmetic can trust: no inf/NaN, times before year 2242,
# sequence numbers far below SQLite's 2**63 ceiling.
Timestamp = Annotated[float, msgspec.Meta(ge=0, le=2**33)]
Finite = Annotated[float, msgspec.Meta(ge=-1e300, le=1e300)]
Seq = Annotated[int, msgspec.Meta(ge=1, le=2**62)]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", omit_defaults=True):
    """Base of every event. ``ts`` is the node's wall clock, in Unix seconds."""

    ts: Timestamp


# --- pipeline -------------------------------------------------------------------------


class Dropped(Event, frozen=True, tag="dropped"):
    """Events ``first_seq`` .. (this event's seq - 1) were shed; ``count`` real events lost."""

    first_seq: Seq
    count: Annotated[int, msgspec.Meta(ge=0, le=2**62)]
    reason: Str


NoticeLevel = Literal["info", "warning", "error"]


class Notice(Event, frozen=True, tag="notice"):
    """Something a person should know about the agent itself (a collector stepping aside)."""

    source: Str
    level: NoticeLevel
    message: Str


# --- host metrics ---------------------------------------------------------------------


class Metrics(Event, frozen=True, tag="metrics"):
    """One sample of many series. Keys are Prometheus-style ids: ``name`` or
    ``name{label="value",...}`` with labels sorted, e.g. ``disk_used_ratio{mount="/"}``."""

    samples: dict[Str, Finite]


# --- files ----------------------------------------------------------------------------


class FileChange(Event, frozen=True, tag="file"):
    action: Literal["create", "modify", "delete", "move", "attrib"]
    path: Str
    src_path: Str | None = None  # for moves
    size: int | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    sha256: Str | None = None
    old_sha256: Str | None = None
    content_changed: bool = False
    secret: bool = False  # not world-readable: content and diff never leave the node
    diff: Text | None = None


class BaselineFile(msgspec.Struct, frozen=True, array_like=True):
    path: Str
    size: int
    mode: int
    uid: int
    gid: int
    sha256: Str | None = None
    secret: bool = False  # not world-readable: no content
    content: Text | None = None  # small non-secret text files only


class FileBaseline(Event, frozen=True, tag="file_baseline"):
    """The watched files as the agent found them at its first start (in parts: ``part`` of
    ``parts``), so the hub knows configuration that predates the agent, not only changes."""

    files: list[BaselineFile]
    part: int = 1
    parts: int = 1


# --- devices, packages, services ------------------------------------------------------

DeviceSource = Literal["udev", "kernel"]
PackageAction = Literal["install", "upgrade", "downgrade", "remove", "purge"]


class Device(Event, frozen=True, tag="device"):
    action: Str  # add, remove, change, bind, unbind, ...
    subsystem: Str
    sys_path: Str
    devtype: Str | None = None
    dev_node: Str | None = None
    vendor: Str | None = None
    model: Str | None = None
    serial: Str | None = None
    driver: Str | None = None
    bus: Str | None = None
    source: DeviceSource = "udev"
    old_sys_path: Str | None = None  # for "move" (a renamed interface): where it was


class Package(Event, frozen=True, tag="package"):
    action: PackageAction
    manager: Str
    name: Str
    version: Str | None = None
    old_version: Str | None = None
    arch: Str | None = None
    user: Str | None = None  # who asked for it (apt's Requested-By), when known
    command: Str | None = None  # the package manager command line (apt's Commandline), when known


class PackageInfo(msgspec.Struct, frozen=True, array_like=True):
    name: Str
    version: Str
    arch: Str = ""
    manual: bool = True


class PackageInventory(Event, frozen=True, tag="package_inventory"):
    manager: Str
    packages: list[PackageInfo]


class PendingUpdate(msgspec.Struct, frozen=True, array_like=True):
    name: Str
    current: Str
    candidate: Str
    security: bool = False


class PendingUpdates(Event, frozen=True, tag="pending_updates"):
    manager: Str
    updates: list[PendingUpdate]


class Service(Event, frozen=True, tag="service"):
    unit: Str
    active: Str  # active, inactive, failed, activating, ...
    sub: Str | None = None
    result: Str | None = None
    restarts: int | None = None
    previous: Str | None = None
    enabled: Str | None = None


# --- people and programs --------------------------------------------------------------


class Command(Event, frozen=True, tag="command"):
    """A shell command, already redacted on the node."""

    command: Text
    cwd: Str | None = None
    user: Str | None = None
    tty: Str | None = None
    exit_code: int | None = None
    duration_ms: int | None = None
    shell: Str | None = None
    redacted: bool = False


class Log(Event, frozen=True, tag="log"):
    source: Str  # journald, or the file path tailed
    message: Text
    program: Str | None = None
    pid: int | None = None
    severity: int | None = None  # syslog 0 (emerg) .. 7 (debug)
    facility: Str | None = None
    host: Str | None = None
    unit: Str | None = None


class Proc(msgspec.Struct, frozen=True, array_like=True):
    pid: int
    name: Str
    user: Str
    cpu_percent: Finite
    rss: int
    cmdline: Str = ""


class Processes(Event, frozen=True, tag="processes"):
    top: list[Proc]


class Inventory(Event, frozen=True, tag="inventory"):
    hostname: Str
    facts: dict[Str, object]  # os, kernel, cpu, memory, disks, mounts, interfaces ...


# --- facts: any collector's current state, kept by the hub with no code of its own -----

FactKey = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
FactSource = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class Facts(Event, frozen=True, tag="facts"):
    """Every item a collector sees now, keyed (a snapshot, not a change): the hub keeps the
    latest per (node, source, key) in ``twin_facts`` and records what was added, changed or
    removed in ``twin_fact_changes``. Values are small JSON objects."""

    source: FactSource
    items: Annotated[dict[FactKey, dict[str, Any]], msgspec.Meta(max_length=20_000)]


# --- active checks (agent/collectors/checks.py) ----------------------------------------


class CheckResult(Event, frozen=True, tag="check"):
    """One run of an active check (HTTP, TCP, TLS, DNS). A hub older than this kind keeps it
    as an unknown event (stored, not projected), like any future kind."""

    name: Str
    type: Literal["http", "tcp", "tls", "dns"]
    target: Str
    ok: bool
    latency_ms: Finite | None = None
    status: int | None = None  # HTTP status
    error: Str | None = None
    cert_expires: Timestamp | None = None  # the server certificate's notAfter (https, tls)
    cert_days: Finite | None = None  # days from ts until cert_expires
    detail: Str | None = None  # DNS: the addresses found


# --- containers (agent/collectors/containers.py) --------------------------------------


class Container(Event, frozen=True, tag="container"):
    """A container's state changed (or was first seen, or is gone: state ``removed``). CPU and
    memory go as ``container_cpu_percent{name=...}`` / ``container_memory_bytes`` metrics."""

    name: Str
    id: Str
    image: Str
    state: Str  # created, running, paused, restarting, exited, dead, removed
    health: Str | None = None  # healthy, unhealthy, starting (when it has a healthcheck)
    restarts: int = 0
    exit_code: int | None = None
    engine: Str = "docker"  # docker or podman
    previous: Str | None = None  # the state (and health) before this change


# --- jobs (playbook runs) -------------------------------------------------------------


class JobResult(Event, frozen=True, tag="job_result"):
    job_id: Str
    playbook: Str
    status: Literal["running", "succeeded", "failed", "refused", "timeout"]
    exit_code: int | None = None
    output: Text = ""
    reason: Str | None = None
    duration_ms: int | None = None


AnyEvent = Union[  # noqa: UP007 - a runtime Union object for msgspec and __args__
    Dropped,
    Notice,
    Metrics,
    FileChange,
    Device,
    Package,
    PackageInventory,
    PendingUpdates,
    Service,
    Command,
    Log,
    Processes,
    Inventory,
    Facts,
    JobResult,
    CheckResult,
    Container,
    FileBaseline,
]
KINDS: frozenset[str] = frozenset(t.__struct_config__.tag for t in AnyEvent.__args__)  # type: ignore[attr-defined]


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    """What an agent POSTs: ``events`` is a list of ``(seq, event bytes)`` pairs, seq strictly
    increasing. ``sent`` is the node clock when the frame was built (clock-skew detection).
    An empty ``events`` list is a heartbeat."""

    v: int = WIRE_VERSION
    node: NodeName
    sent: Timestamp
    events: list[tuple[Seq, msgspec.Raw]] = []


class TypedBatch(msgspec.Struct, frozen=True, kw_only=True):
    """The hub's fast path: the same frame, every event decoded in one call."""

    v: int = WIRE_VERSION
    node: NodeName
    sent: Timestamp
    events: list[tuple[Seq, AnyEvent]] = []


class Unknown(msgspec.Struct):
    """The minimum the hub needs to keep an event of a kind it does not know (plus its bytes)."""

    kind: str
    ts: Timestamp
    raw: msgspec.Raw | None = None


encoder = msgspec.msgpack.Encoder()
event_decoder = msgspec.msgpack.Decoder(AnyEvent)
batch_decoder = msgspec.msgpack.Decoder(Batch)
typed_batch_decoder = msgspec.msgpack.Decoder(TypedBatch)
unknown_decoder = msgspec.msgpack.Decoder(Unknown)


class FrameError(ValueError):
    """A frame or event that cannot be accepted. The message says what and where."""


def encode_event(event: Event) -> bytes:
    return encoder.encode(event)


def encode_batch(node: str, sent: float, events: list[tuple[int, bytes]]) -> bytes:
    return encoder.encode(
        Batch(node=node, sent=sent, events=[(s, msgspec.Raw(b)) for s, b in events])
    )


class Frame(msgspec.Struct):
    """A decoded, checked batch. ``typed`` is False when some event is ``Unknown``."""

    node: str
    sent: float
    seqs: list[int]
    events: list
    typed: bool


def decode_batch(body: bytes) -> Frame:
    """Decode and check a frame. Raises FrameError naming the problem (and the event
    index, when one event is at fault)."""
    if len(body) > MAX_BATCH_BYTES:
        raise FrameError(f"batch is {len(body)} bytes; the limit is {MAX_BATCH_BYTES}")
    try:
        return _decode_batch(body)
    except RecursionError:  # msgspec recurses on nesting; a hostile frame nests thousands deep
        raise FrameError("malformed batch: nested too deeply") from None


def _decode_batch(body: bytes) -> Frame:
    try:  # fast path: every kind known, one C call for the whole batch
        tb = typed_batch_decoder.decode(body)
        node, sent, v = tb.node, tb.sent, tb.v
        seqs = [s for s, _ in tb.events]
        events: list = [e for _, e in tb.events]
        typed = True
    except msgspec.DecodeError:  # includes ValidationError: find out exactly what is wrong
        try:
            batch = batch_decoder.decode(body)
        except msgspec.DecodeError as e:
            raise FrameError(f"malformed batch: {e}") from None
        node, sent, v = batch.node, batch.sent, batch.v
        seqs = [s for s, _ in batch.events]
        _check(v, seqs)
        events = [decode_event(raw, i) for i, (_, raw) in enumerate(batch.events)]
        return Frame(node, sent, seqs, events, False)
    _check(v, seqs)
    return Frame(node, sent, seqs, events, typed)


def _check(v: int, seqs: list[int]) -> None:
    if v != WIRE_VERSION:
        raise FrameError(f"wire version {v} is not supported (this hub speaks {WIRE_VERSION})")
    if len(seqs) > MAX_BATCH_EVENTS:
        raise FrameError(f"batch has {len(seqs)} events; the limit is {MAX_BATCH_EVENTS}")
    prev = 0
    for i, seq in enumerate(seqs):
        if seq <= prev:
            raise FrameError(f"events[{i}]: seq {seq} does not increase (previous {prev})")
        prev = seq


def decode_event(raw: bytes | msgspec.Raw, index: int = 0) -> Event | Unknown:
    """Decode one event. A well-formed event of a kind this version does not know comes back
    as ``Unknown`` (kept, not projected); anything else raises FrameError naming the index."""
    try:
        return event_decoder.decode(raw)
    except msgspec.ValidationError as e:
        err = e
    except msgspec.DecodeError as e:
        raise FrameError(f"events[{index}]: malformed: {e}") from None
    try:
        unk = unknown_decoder.decode(raw)
    except msgspec.DecodeError:
        raise FrameError(f"events[{index}]: {err}") from None
    if unk.kind in KINDS or not KIND_RE.match(unk.kind):
        raise FrameError(f"events[{index}] (kind {unk.kind!r}): {err}") from None
    return Unknown(kind=unk.kind, ts=unk.ts, raw=msgspec.Raw(bytes(raw)))
