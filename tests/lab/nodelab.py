"""A node lab: real Debian machines with systemd as PID 1, booted with systemd-nspawn on a host
whose PID 1 need not be systemd (see docs/lab.md).

Each node is an overlay (its own upper directory over one cached, read-only root image), booted
by ``systemd-nspawn -b --register=no --keep-unit`` inside a cgroup of its own (so two run at
once and every process is found again at teardown) and inside a network namespace of its own
joined to the host by a veth pair (``hl-<name>`` on the host side, 10.77.N.1 host / 10.77.N.2
node). Commands run inside with ``nsenter -t <container PID 1> -a``. A reboot inside the node
(exit 133 from nspawn) boots it again on the same overlay, as systemd-nspawn@.service would.

Run as a script (as root) to try a fleet by hand:
    python tests/lab/nodelab.py up --nodes 2      # boots hl-n1, hl-n2 and a hub, prints how to enter
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pty
import re
import secrets
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = "bookworm"
# Everything a scenario or the benchmark needs inside a node; the cache key is this list.
PACKAGES = sorted([
    "systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "iproute2", "procps", "curl",
    "openssh-server", "openssh-client", "sshpass", "nftables", "prometheus-node-exporter",
])
HOOKS = (
    # every node gets its own identity at first boot
    'rm -f "$1"/etc/hostname; : > "$1"/etc/machine-id',
    # and its own ssh host keys, made before sshd's config test on the first start
    'rm -f "$1"/etc/ssh/ssh_host_*; mkdir -p "$1"/etc/systemd/system/ssh.service.d; '
    'printf "[Service]\\nExecStartPre=\\nExecStartPre=/usr/bin/ssh-keygen -A\\nExecStartPre=/usr/sbin/sshd -t\\n" '
    '> "$1"/etc/systemd/system/ssh.service.d/lab-keys.conf',
)
CACHE = Path(os.environ.get("HOMELAB_LAB_CACHE", "/var/cache/homelab-lab"))
CGROUP_HIERARCHIES = ("systemd", "unified")  # hybrid hosts have both; pure v2 only the root
BUILD_TIMEOUT = 900


class LabUnavailable(Exception):
    """The lab cannot run here (not root, no nspawn, no network namespaces): tests skip."""


def run(argv: list[str], timeout: float = 60, check: bool = True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: {(r.stderr or r.stdout)[-2000:]}")
    return r


def image_key() -> str:
    return hashlib.sha256("\n".join([SUITE, *PACKAGES, *HOOKS]).encode()).hexdigest()[:12]


def check_host() -> None:
    if os.geteuid() != 0:
        raise LabUnavailable("the node lab needs root (nspawn, cgroups, network namespaces)")
    for tool in ("systemd-nspawn", "mmdebstrap", "nsenter", "ip"):
        if shutil.which(tool) is None:
            raise LabUnavailable(f"{tool} is not installed (apt-get install systemd-container mmdebstrap iproute2)")


def image(cache: Path = CACHE) -> Path:
    """The unpacked root image for PACKAGES, built once per machine (1.5-2 min) under a lock so
    parallel callers wait for one build. The directory is only ever read (nodes overlay it)."""
    check_host()
    base = cache / image_key()
    root = base / "root"
    if (base / "ready").exists():
        return root
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (base / "ready").exists():
            return root
        sources = [str(p) for p in (Path("/etc/apt/sources.list.d/debian.sources"),
                                    Path("/etc/apt/sources.list")) if p.is_file()]
        part = base / "root.part"  # a directory target: mmdebstrap writes the tree itself
        shutil.rmtree(part, ignore_errors=True)
        argv = ["mmdebstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                *(f"--customize-hook={h}" for h in HOOKS),
                SUITE, str(part), *sources[:1]]
        r = run(argv, timeout=BUILD_TIMEOUT, check=False)
        if r.returncode != 0:
            shutil.rmtree(part, ignore_errors=True)
            raise LabUnavailable(f"building the node image failed: {r.stderr[-1500:]}")
        shutil.rmtree(root, ignore_errors=True)
        os.replace(part, root)
        (base / "ready").write_text(" ".join(PACKAGES) + "\n")
    for old in cache.iterdir():  # images of other package lists are never used again
        if old.is_dir() and old != base and (old / "ready").exists():
            shutil.rmtree(old, ignore_errors=True)
    return root



def poll(cond, timeout: float = 90, interval: float = 0.5, what: str = "condition"):
    """Poll cond() until truthy (returned), failing with `what` after a generous bound."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# -- network --------------------------------------------------------------------------------


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["ip", *args], timeout=20, check=check)


class Net:
    """A bridge on the host (the hub's address) and, per node, a network namespace joined to it
    by a veth pair. Every name starts with ``hl`` and carries a random tag, so two labs (two CI
    jobs, a person and the suite) never collide."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(2)
        self.bridge = f"hl-{self.tag}"
        self.prefix = f"10.77.{secrets.randbelow(250) + 1}"
        self.hub_ip = f"{self.prefix}.1"
        self.namespaces: list[str] = []
        self.links: list[str] = []

    def up(self) -> None:
        if shutil.which("ip") is None or run(["ip", "netns", "list"], check=False).returncode != 0:
            raise LabUnavailable("ip netns does not work here")
        ip("link", "add", self.bridge, "type", "bridge")
        self.links.append(self.bridge)
        ip("addr", "add", f"{self.hub_ip}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add(self, i: int) -> tuple[str, str, str]:
        """(namespace, host-side link, node address) for node number i (1..200)."""
        ns, host_end = f"hl-{self.tag}-n{i}", f"hl-{self.tag}-v{i}"
        ip("netns", "add", ns)
        self.namespaces.append(ns)
        ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
        self.links.append(host_end)
        ip("link", "set", host_end, "master", self.bridge)
        ip("link", "set", host_end, "up")
        addr = f"{self.prefix}.{i + 10}"
        ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "route", "add", "default", "via", self.hub_ip)
        return ns, host_end, addr

    def down(self) -> None:
        for link in reversed(self.links):
            ip("link", "del", link, check=False)
        for ns in self.namespaces:
            ip("netns", "del", ns, check=False)
        self.links.clear()
        self.namespaces.clear()


# -- nodes ----------------------------------------------------------------------------------


def cgroup_dirs(name: str) -> list[Path]:
    """Where a node's own cgroup goes: the named systemd and the unified hierarchy on a hybrid
    host (nspawn needs both), or the one unified tree."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():
        return [base / name]
    return [base / h / name for h in CGROUP_HIERARCHIES if (base / h).is_dir()]


def cgroup_pids(dirs: list[Path]) -> set[int]:
    pids: set[int] = set()
    for d in dirs:
        for procs in d.rglob("cgroup.procs") if d.is_dir() else []:
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(x) for x in procs.read_text().split())
    return pids


class Node:
    """One booted machine. ``sh()`` runs a command inside as root; the node reboots on
    ``reboot()`` and keeps its disk (the overlay's upper directory) until the lab is torn down."""

    def __init__(self, lab: Lab, name: str, i: int):
        self.lab, self.name, self.i = lab, name, i
        self.dir = lab.workdir / name
        self.root = self.dir / "root"
        self.cgroup = cgroup_dirs(f"{lab.net.bridge}-{name}")
        self.ns, self.link, self.addr = lab.net.add(i)
        self.console = self.dir / "console.log"
        self.proc: subprocess.Popen | None = None
        self.boots = 0
        self.mounted = False

    # lifecycle

    def start(self) -> Node:
        for d in ("upper", "work", "root"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        if not self.mounted:
            run(["mount", "-t", "overlay", "overlay", "-o",
                 f"lowerdir={self.lab.image},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}",
                 str(self.root)])
            self.mounted = True
        for d in self.cgroup:
            d.mkdir(exist_ok=True)
        enter = "; ".join(f"echo $$ > {d}/cgroup.procs" for d in self.cgroup)
        argv = ["systemd-nspawn", "-q", "-b", "--register=no", "--keep-unit", "-M", self.name,
                "-D", str(self.root), f"--network-namespace-path=/run/netns/{self.ns}",
                "--console=read-only", "--link-journal=no", "--resolv-conf=off", "--timezone=off",
                # root on a real machine administers its network (nftables for block-address);
                # nspawn keeps it only with --private-network, here the node's own namespace
                "--capability=CAP_NET_ADMIN"]
        with open(self.console, "ab") as out:
            self.proc = subprocess.Popen(["/bin/sh", "-c", f'{enter}; exec "$@"', "nspawn", *argv],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.boots += 1
        self.wait_booted()
        return self

    def pid1(self) -> int:
        """The container's PID 1 (as the host sees it): nspawn's child."""
        assert self.proc is not None
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: nspawn exited {self.proc.returncode}: {self.tail()}")
            with contextlib.suppress(OSError, ValueError):
                for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                    kids = (task / "children").read_text().split()
                    if kids:
                        return int(kids[0])
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no container PID 1 after 30 s: {self.tail()}")
            time.sleep(0.05)

    def wait_booted(self, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while True:
            r = self.sh("systemctl is-system-running --wait", check=False, timeout=timeout)
            state = r.stdout.strip()
            if state in ("running", "degraded"):
                return state
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: not booted after {timeout}s ({state}): {self.tail()}")
            time.sleep(0.2)

    def reboot(self, timeout: float = 90) -> None:
        """``systemctl reboot`` inside; nspawn exits 133 and the node boots again on its disk."""
        assert self.proc is not None
        self.sh("systemctl reboot", check=False)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{self.name}: still up {timeout}s after reboot") from None
        if code != 133:
            raise RuntimeError(f"{self.name}: nspawn exited {code} on reboot, not 133: {self.tail()}")
        self.start()

    def stop(self, grace: float = 15) -> None:
        """Power off (SIGTERM to nspawn asks PID 1 to shut down), then kill whatever is left
        in the node's cgroup, remove the cgroup, unmount the overlay."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        for _ in range(50):
            pids = cgroup_pids(self.cgroup)
            if self.proc is not None and self.proc.poll() is None:
                pids.add(self.proc.pid)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        for d in self.cgroup:
            for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) if d.is_dir() else []:
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                d.rmdir()
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.name}", ignore_errors=True)
        if self.mounted:
            r = run(["umount", str(self.root)], check=False)
            if r.returncode != 0:
                run(["umount", "-l", str(self.root)], check=False)
            self.mounted = False

    # inside

    def sh(self, script: str, check: bool = True, timeout: float = 120, user: str | None = None,
           input: str | None = None) -> subprocess.CompletedProcess:
        """Run a shell script inside the node (as root, or as ``user`` through runuser), with a
        clean environment rather than the test runner's."""
        argv = self.enter_argv() + ["/usr/bin/env", "-i", *self.env()]
        if user:
            argv += ["/usr/sbin/runuser", "-u", user, "--"]
        r = subprocess.run(argv + ["/bin/sh", "-c", script], capture_output=True, text=True,
                           timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise RuntimeError(f"{self.name}: `{script}` exited {r.returncode}: {(r.stderr or r.stdout)[-2000:]}")
        return r

    def enter_argv(self) -> list[str]:
        return ["nsenter", "-t", str(self.pid1()), "-a"]

    @staticmethod
    def env() -> list[str]:
        return ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
                "LANG=C.UTF-8", "TERM=dumb"]

    def login_shell(self, user: str, lines: list[str], timeout: float = 60) -> str:
        """Type ``lines`` into ``user``'s login shell (su -l) on a pseudo-terminal, as a person
        at a console would, then exit; return what the terminal showed."""
        master, slave = pty.openpty()
        # script(1) inside the node: the shell's terminal is one of the node's own /dev/pts
        argv = self.enter_argv() + ["/usr/bin/env", "-i", "TERM=dumb", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                                    "/usr/bin/script", "-q", "-e", "-c", f"/bin/su -l {user}", "/dev/null"]
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        seen = bytearray()

        def read_until(done, limit: float) -> None:
            deadline = time.monotonic() + limit
            while not done() and time.monotonic() < deadline:
                r, _, _ = select.select([master], [], [], 0.2)
                if r:
                    try:
                        seen.extend(os.read(master, 65536))
                    except OSError:  # the shell is gone
                        return

        try:
            read_until(lambda: b"$ " in seen, timeout)  # the login shell's first prompt
            for i, line in enumerate(lines):
                mark = f"lab-prompt-{i}"
                os.write(master, f"{line}\necho {mark}\n".encode())
                # the shell echoes what is typed; the mark printed on a line of its own is the output
                read_until(lambda m=mark: f"\n{m}\r\n".encode() in seen, timeout)
            os.write(master, b"exit\n")
            read_until(lambda: proc.poll() is not None, timeout)
            proc.wait(timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            os.close(master)
        return seen.decode("utf-8", "replace")

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        self.sh(f"umask 022; cat > '{path}' && chmod {mode:o} '{path}'", input=text)

    def tail(self, n: int = 3000) -> str:
        try:
            return self.console.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def enroll(self) -> subprocess.CompletedProcess:
        """Install the agent as a user does: the hub's one-liner, then enable --now the unit."""
        line = self.lab.hub.one_liner(self.name)
        r = self.sh(line, timeout=600)
        self.sh("systemctl enable --now homelab-agent")
        return r

    def journal(self, unit: str = "homelab-agent", lines: int = 200) -> str:
        return self.sh(f"journalctl --no-pager -n {lines} -u {unit}", check=False).stdout


# -- the hub on the host --------------------------------------------------------------------


class Hub:
    """``python -m hub serve`` on the bridge address, its data under the lab's directory; the
    bootstrap artifacts (agent wheel, wheelhouse) cached across runs beside the image."""

    def __init__(self, lab: Lab, env: dict | None = None):
        self.lab = lab
        self.data_dir = lab.workdir / "hub"
        self.port = free_port(lab.net.hub_ip)
        self.url = f"http://{lab.net.hub_ip}:{self.port}"
        self.log = lab.workdir / "hub.log"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1",
                    "HOMELAB_HUB_DATA_DIR": str(self.data_dir),
                    "HOMELAB_HUB_LISTEN": f"{lab.net.hub_ip}:{self.port}",
                    "HOMELAB_HUB_BOOTSTRAP_DIR": str(CACHE / "bootstrap"),
                    # the lab tests the nodes: the rule's own choice of playbook stands
                    "HOMELAB_MODEL": "none", **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Hub:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "hub", "serve"], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited {self.proc.returncode}: {self.output()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex((self.lab.net.hub_ip, self.port)) == 0:
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"hub not listening after 60 s: {self.output()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, "-m", "hub", *args], env=self.env, capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"homelab-hub {' '.join(args)} exited {r.returncode}: {r.stderr[-2000:]}")
        return r

    def one_liner(self, node: str) -> str:
        # plain HTTP on the lab's own veth links (namespaces this lab made): enroll refuses that
        # off a tailnet unless told, as it should for a real network (docs/security.md)
        out = self.cli("enroll", node, "--insecure").stdout.strip().splitlines()
        line = next(ln for ln in out if ln.startswith("curl "))
        return line

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        db = sqlite3.connect(f"file:{self.data_dir / 'homelab.db'}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# -- the lab --------------------------------------------------------------------------------


class Lab:
    """Image + network + hub + nodes; ``close()`` tears all of it down, also after a failure
    half way through ``up``."""

    def __init__(self, workdir: Path, hub_env: dict | None = None):
        check_host()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.image = image()
        self.net = Net()
        self.nodes: dict[str, Node] = {}
        self.made = 0
        self.names: set[str] = set()  # the hub outlives nodes: a reused name would mix their rows
        self.hub: Hub | None = None
        self.hub_env = hub_env

    def up(self) -> Lab:
        try:
            self.net.up()
            self.hub = Hub(self, self.hub_env).start()
        except BaseException:
            self.close()
            raise
        return self

    def node(self, name: str) -> Node:
        if not NAME_RE.match(name):
            raise ValueError(f"node name {name!r}: use 1-20 of a-z, 0-9, -")
        if name in self.names:
            raise ValueError(f"node name {name!r} was already used in this lab: the hub keeps its rows")
        self.names.add(name)
        self.made += 1  # never reused: a stopped node's namespace lives until close()
        n = Node(self, name, self.made)
        self.nodes[name] = n  # before start: a failed boot is still torn down
        return n.start()

    def close(self) -> None:
        errors = []
        for n in list(self.nodes.values()):
            try:
                n.stop()
            except Exception as e:  # keep tearing down the rest
                errors.append(f"{n.name}: {e}")
        if self.hub is not None:
            self.hub.stop()
        self.net.down()
        if errors:
            raise RuntimeError("lab teardown: " + "; ".join(errors))


NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Boot a hub and N systemd nodes with the agent enrolled.")
    ap.add_argument("action", choices=["up", "image"])
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=None, help="working directory (default: a temporary one)")
    a = ap.parse_args()
    try:
        if a.action == "image":
            print(image())
            return
        workdir = a.dir or Path(tempfile.mkdtemp(prefix="homelab-lab-"))
        lab = Lab(workdir).up()
    except LabUnavailable as e:
        sys.exit(f"lab: {e}")
    try:
        for i in range(1, a.nodes + 1):
            node = lab.node(f"node{i}")
            node.enroll()
            print(f"node{i}: booted, agent enrolled; enter with: {' '.join(node.enter_argv())} bash")
        print(f"hub: {lab.hub.url}  (data in {lab.hub.data_dir}; e.g. HOMELAB_HUB_DATA_DIR={lab.hub.data_dir} "
              f"homelab-hub nodes)\nCtrl-C tears everything down.")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        lab.close()


if __name__ == "__main__":
    main()
