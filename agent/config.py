"""Agent settings (flag > environment > file > default). See docs/settings.md.

The state directory holds everything the agent owns: ``agent.toml`` (written by
``join``, editable), ``credential`` (mode 0600), ``hub.pub`` (the hub's pinned job-signing
key), ``spool.db`` and ``state.db`` (collector positions and baselines).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .collectors import REGISTRY
from .playbook import RISKS
from .settings import (
    Opt,
    Settings,
    home_dir,
    load_process,
    parse_bool,
    parse_duration,
    parse_list,
    parse_size,
    xdg,
)


def default_state_dir() -> Path:
    return xdg("STATE", ".local/state") / "homelab-agent"


ALL_COLLECTORS = tuple(REGISTRY)  # every collector is on by default; each steps aside where it cannot run


def parse_checks_setting(v):
    """Validated here so a wrong check is named at load time; kept as plain tables."""
    from agent.collectors.checks import parse_checks

    parse_checks(v)
    return json.loads(v) if isinstance(v, str) and v.strip() else (list(v) if isinstance(v, list) else [])


# Parsers that refuse nonsense: an agent started with `--collectors metrix` or a zero interval
# would run with nothing to do. The error names the setting (Opt.convert) and what is allowed.


def parse_collectors(v: str | list) -> list[str]:
    names = parse_list(v)
    bad = [n for n in names if n not in ALL_COLLECTORS]
    if bad:
        raise ValueError(f"unknown collector(s) {', '.join(map(repr, bad))} (allowed: {', '.join(ALL_COLLECTORS)})")
    if not names:
        raise ValueError(f"no collectors given (allowed: {', '.join(ALL_COLLECTORS)})")
    return names


def _at_least(parse, low: float, what: str):
    def check(v):
        x = parse(v)
        if x < low:
            raise ValueError(f"{v!r} is too small: {what}")
        return x

    return check


def positive_duration(v) -> float:
    x = parse_duration(v)
    if x <= 0:
        raise ValueError(f"{v!r} is not allowed: must be a duration above zero, such as 500ms, 10s or 5m")
    return x


def _int(v) -> int:
    if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError(f"expected a whole number, got {v!r}")
    try:
        return int(v)
    except (TypeError, ValueError):
        raise ValueError(f"expected a whole number, got {v!r}") from None


def parse_risk(v) -> str:
    if v not in RISKS:
        raise ValueError(f"{v!r} is not a risk tier (allowed: {', '.join(RISKS)})")
    return str(v)

AGENT_OPTS: tuple[Opt, ...] = (
    Opt("state_dir", None, "HOMELAB_AGENT_STATE_DIR", "Directory for the agent's config, credential, spool and state.", Path, "--state-dir"),
    Opt("hub_url", None, "HOMELAB_AGENT_HUB_URL", "The hub's URL (written by `join`).", str, "--hub-url"),
    Opt("node", None, "HOMELAB_AGENT_NODE", "This node's enrolled name (written by `join`).", str),
    Opt("collectors", list(ALL_COLLECTORS), "HOMELAB_AGENT_COLLECTORS", "Collectors to run; each steps aside by itself where it cannot run.", parse_collectors, "--collectors"),
    Opt("watch", ["/etc"], "HOMELAB_AGENT_WATCH", "Paths watched for file changes, recursively (repeat the flag; os.pathsep-separated in the environment).", parse_list, "--watch"),
    Opt("exclude", ["*.swp", "*.swx", "*~", ".#*", "*.tmp", "*.dpkg-tmp", "*.dpkg-new", "*.dpkg-old", "*.dpkg-dist", "*.ucf-*", "*.rpmnew", "*.rpmsave", "/etc/ld.so.cache"], "HOMELAB_AGENT_EXCLUDE", "Glob patterns (matched against the full path and the file name) never reported nor inventoried: editor scratch, temporary and package-manager leftover files by default.", parse_list, "--exclude"),
    Opt("content_paths", [], "HOMELAB_AGENT_CONTENT_PATHS", "Non-world-readable paths whose diffs you opt in to sending (default: none leave the node).", parse_list),
    Opt("diff_max_bytes", 65536, "HOMELAB_AGENT_DIFF_MAX_BYTES", "Text files up to this size get a unified diff with their change events.", parse_size),
    Opt("metrics_interval", 10.0, "HOMELAB_AGENT_METRICS_INTERVAL", "Seconds between host metric samples (1s or more).", _at_least(parse_duration, 1.0, "the metrics collector samples at most once a second (1s or more)"), "--metrics-interval"),
    Opt("log_files", [], "HOMELAB_AGENT_LOG_FILES", "Extra log files to tail (repeat the flag).", parse_list, "--log-file"),
    Opt("spool_max_bytes", 64 * 1024 * 1024, "HOMELAB_AGENT_SPOOL_MAX_BYTES", "Disk bound of the spool; past it the oldest events are shed and counted.", parse_size),
    Opt("keep_acked", 86400.0, "HOMELAB_AGENT_KEEP_ACKED", "How long events the hub acked stay in the spool (within its byte bound), so a hub restored from a backup gets them back.", parse_duration),
    Opt("queue_size", 10_000, "HOMELAB_AGENT_QUEUE_SIZE", "In-memory events between collectors and spool; past it events are shed and counted.", _at_least(_int, 1, "at least 1")),
    Opt("batch_max_events", 2000, "HOMELAB_AGENT_BATCH_MAX_EVENTS", "Most events per request to the hub.", _at_least(_int, 1, "at least 1")),
    Opt("ship_linger", 5.0, "HOMELAB_AGENT_SHIP_LINGER", "How long metrics, log lines, commands and process tables may wait to share a request; other events ship at once (0: every event at once).", parse_duration),
    Opt("heartbeat", 30.0, "HOMELAB_AGENT_HEARTBEAT", "Idle interval after which an empty batch tells the hub the node is alive.", positive_duration),
    Opt("exec", True, "HOMELAB_AGENT_EXEC", "Allow approved playbooks to run here. false is final: the hub cannot turn it back on.", parse_bool, "--exec/--no-exec"),
    Opt("max_risk", "change", "HOMELAB_AGENT_MAX_RISK", "Highest playbook risk tier this node runs: read-only, change or destructive.", parse_risk),
    Opt("allow_playbooks", [], "HOMELAB_AGENT_ALLOW_PLAYBOOKS", "If set, only these playbooks may run here.", parse_list),
    Opt("playbooks_dir", None, "HOMELAB_AGENT_PLAYBOOKS_DIR", "Playbooks installed on this node. Default: the shipped playbooks/.", Path),
    Opt("job_memory_max", 512 * 1024 * 1024, "HOMELAB_AGENT_JOB_MEMORY_MAX", "Memory limit (MemoryMax) of each playbook's own transient unit where systemd is PID 1.", parse_size),
    Opt("socket", None, "HOMELAB_AGENT_SOCKET", "Unix socket the shell hook reports commands to. Default: STATE_DIR/commands.sock.", Path),
    # logs (docs/logs-and-commands.md)
    Opt("log_journal", True, "HOMELAB_AGENT_LOG_JOURNAL", "Read journald (through libsystemd) where a journal exists, instead of /var/log/syslog, auth.log and messages.", parse_bool),
    Opt("journal_dir", None, "HOMELAB_AGENT_JOURNAL_DIR", "Read the journal files in this directory (what journalctl --directory reads) instead of the system journal.", Path),
    Opt("log_max_rate", 2000, "HOMELAB_AGENT_LOG_MAX_RATE", "Most log lines per second the logs collector ships (bursts up to 10x); the excess is shed and counted. 0: no limit but the queue's.", _at_least(_int, 0, "0 (no limit) or more")),
    # digital twin (docs/twin.md)
    Opt("device_subsystems", ["block", "net", "usb", "pci", "input", "sound", "scsi", "nvme", "hidraw", "video4linux", "drm", "bluetooth", "thunderbolt", "mmc", "usbmisc"], "HOMELAB_AGENT_DEVICE_SUBSYSTEMS", "Device subsystems reported by the devices collector; '*' reports every subsystem.", parse_list),
    Opt("packages_poll", 2.0, "HOMELAB_AGENT_PACKAGES_POLL", "How often the package manager's log is read during a burst of changes, and where inotify cannot watch its directory (otherwise it is read when written).", parse_duration),
    Opt("packages_settle", 3.0, "HOMELAB_AGENT_PACKAGES_SETTLE", "Quiet time after package changes before a new package inventory is taken.", parse_duration),
    Opt("pending_updates_interval", 6 * 3600.0, "HOMELAB_AGENT_PENDING_UPDATES_INTERVAL", "Interval between simulated upgrades (apt-get -s upgrade) listing pending updates; 0 disables.", parse_duration),
    Opt("services_interval", 15.0, "HOMELAB_AGENT_SERVICES_INTERVAL", "Interval between polls of systemd unit states; a poll runs no systemctl while no unit started or stopped, with a full look at least every 120 s.", parse_duration),
    Opt("processes_interval", 60.0, "HOMELAB_AGENT_PROCESSES_INTERVAL", "Interval between top-process samples.", parse_duration),
    Opt("processes_top", 10, "HOMELAB_AGENT_PROCESSES_TOP", "How many processes by CPU and how many by memory each sample reports.", int),
    Opt("checks", [], "HOMELAB_AGENT_CHECKS", "Active checks run from this node: [[checks]] tables with name, type (http, tcp, tls, dns), target and options (docs/checks.md); a JSON list in the environment.", parse_checks_setting),
    Opt("containers_socket", None, "HOMELAB_AGENT_CONTAINERS_SOCKET", "Docker Engine API socket (Docker's or Podman's). Default: the first of /var/run/docker.sock, /run/podman/podman.sock, $XDG_RUNTIME_DIR/podman/podman.sock that answers.", str),
    Opt("containers_interval", 30.0, "HOMELAB_AGENT_CONTAINERS_INTERVAL", "Interval between polls of the container engine (state, health, restarts, CPU, memory).", parse_duration),
    Opt("inventory_interval", 300.0, "HOMELAB_AGENT_INVENTORY_INTERVAL", "How often the inventory (OS, hardware, mounts, addresses) is re-checked; sent only when it changed.", parse_duration),
)


def state_dir_of(flag: Path | str | None) -> Path:
    return home_dir(flag, "HOMELAB_AGENT_STATE_DIR", default_state_dir)


def load_settings(**flags) -> Settings:
    return load_process(AGENT_OPTS, flags, "state_dir", "HOMELAB_AGENT_STATE_DIR",
                        default_state_dir, "HOMELAB_AGENT_CONFIG", "agent.toml")


def write_identity(state_dir: Path, hub_url: str, node: str, credential: str, hub_key: str) -> None:
    """Persist what `join` learned. The credential file is created 0600 before it is written."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cred = state_dir / "credential"
    tmp = state_dir / "credential.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(credential + "\n")
    os.replace(tmp, cred)
    (state_dir / "hub.pub").write_text(hub_key + "\n")
    cfg = state_dir / "agent.toml"
    kept = []
    if cfg.exists():
        kept = [
            line for line in cfg.read_text().splitlines()
            if line.split("=")[0].strip() not in ("hub_url", "node")
        ]
    lines = [f"hub_url = {json.dumps(hub_url)}", f"node = {json.dumps(node)}", *kept]
    cfg.write_text("\n".join(lines) + "\n")


def read_credential(state_dir: Path) -> str | None:
    try:
        return (state_dir / "credential").read_text().strip()
    except FileNotFoundError:
        return None
