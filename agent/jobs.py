"""The node side of playbook jobs: fetch, verify, run, report.

The agent dials out: it long-polls ``GET /v1/jobs`` on the hub with its node credential; no
port is opened on the node. Before anything runs, every job must pass, in order:

1. the Ed25519 signature over the exact payload bytes, with the hub key pinned at join time
   (``STATE_DIR/hub.pub``): a hub impostor or a tampered job is refused;
2. addressed to this node, not expired, never seen before (job ids are remembered in the
   agent's state until they expire, so a replayed job is refused);
3. the node's own locks, which nothing from the hub can change: ``exec = false`` refuses
   everything, ``allow_playbooks`` limits which playbooks, ``max_risk`` the highest tier (by
   the LOCAL header's risk, not the job's claim), in every mode, dry runs included;
4. the playbook is installed here with the same SHA-256 as approved, and every parameter
   passes the LOCAL header's schema.

The verified bytes are copied to a private directory and run from there (so the file cannot
change between the hash check and bash reading it), with parameters only as environment
variables, a minimal environment, stdin from /dev/null, output bounded to the last 64 KiB.

Where systemd is PID 1, each run is its own transient unit (``systemd-run --wait --pipe``,
``homelab-job-<id>.service``) with the header's timeout as RuntimeMaxSec and its own MemoryMax
(``job_memory_max``): the agent's unit is a read-only sandbox without the capabilities a fix
needs and with a memory limit meant for the agent alone, so a playbook runs outside it, where
what it may do is decided by its own unit. Elsewhere (containers without systemd, a
developer's shell) it is a direct child in a new session whose process group is killed at the
timeout, and the job's output says so. Results go through the spool like every other event,
so they reach the hub exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import pwd
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from . import __version__, wire
from . import playbook as pbmod
from .http import HTTPClientError, HubClient
from .playbook import Playbook, PlaybookError
from .settings import Settings
from .shipper import Backoff

log = logging.getLogger(__name__)

JOB_VERSION = 1
MODES = ("run", "check", "verify", "rollback")
OUTPUT_MAX = 64 * 1024
# check/verify output lands in events, Datasette and the approval screen: a dry run reports
# what it would do, it does not dump files (the file collector keeps unreadable ones back)
DRY_OUTPUT_MAX = 8 * 1024
PAYLOAD_MAX = 64 * 1024
SKEW = 300.0  # how far in the future a job's issue time may be (clock skew)
POLL_WAIT = 25
SEEN_KEY = "jobs.seen"
SEEN_MAX = 10_000
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # also a directory name under STATE_DIR/jobs
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def shipped_playbooks() -> Path:
    """Like hub.paths.shipped('playbooks') (the agent must not import hub): $HOMELAB_SHARE,
    then the source checkout, then <prefix>/share/homelab."""
    env = os.environ.get("HOMELAB_SHARE")
    bases = ([Path(env)] if env else []) + [Path(__file__).resolve().parent.parent, Path(sys.prefix) / "share" / "homelab"]
    for base in bases:
        if (base / "playbooks").is_dir():
            return base / "playbooks"
    return bases[0] / "playbooks"


async def _tail(proc: asyncio.subprocess.Process, buf: bytearray) -> None:
    """Read a job's output into ``buf``, keeping its last OUTPUT_MAX bytes (the end says why)."""
    assert proc.stdout is not None
    while chunk := await proc.stdout.read(65536):
        buf.extend(chunk)
        if len(buf) > OUTPUT_MAX:
            del buf[: len(buf) - OUTPUT_MAX]


class Refused(Exception):
    def __init__(self, reason: str, job_id: str = "?", playbook: str = "?"):
        super().__init__(reason)
        self.reason, self.job_id, self.playbook = reason, job_id, playbook


def load_hub_key(state_dir: Path):
    """The pinned Ed25519 key (cryptography is imported here, on the first job, not at start:
    it costs the idle agent ~6 MB)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = base64.b64decode((Path(state_dir) / "hub.pub").read_text().strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (OSError, ValueError) as e:
        log.warning("no usable pinned hub key in %s (%s): every job will be refused", state_dir, e)
        return None


class JobRunner:
    def __init__(self, settings: Settings, state: Any, report: Callable[[wire.JobResult], None],
                 credential: str | None = None, hub_key: Any = None):
        self.settings = settings
        self.state = state  # agent.state.State
        self.report = report
        self.credential = credential
        self._hub_key = hub_key
        pdir = getattr(settings, "playbooks_dir", None)
        self.playbooks_dir = Path(pdir) if pdir is not None else shipped_playbooks()
        self.run_dir = Path(settings.state_dir) / "jobs"
        self.current: asyncio.subprocess.Process | None = None

    # --- verification -------------------------------------------------------------------

    def verify(self, envelope: Any, now: float | None = None) -> tuple[dict, Playbook, dict[str, str]]:
        """Return (job, local playbook, validated params) or raise Refused with the reason."""
        now = time.time() if now is None else now
        if not isinstance(envelope, dict) or not isinstance(envelope.get("payload"), str) \
                or not isinstance(envelope.get("signature"), str):
            raise Refused("malformed job envelope")
        payload = envelope["payload"]
        if len(payload) > PAYLOAD_MAX:
            raise Refused(f"job payload over {PAYLOAD_MAX} bytes")
        try:
            job = json.loads(payload)
        except ValueError:
            raise Refused("job payload is not JSON") from None
        if not isinstance(job, dict):
            raise Refused("job payload is not an object")
        job_id = str(job.get("id", "?"))[:100]
        name = str(job.get("playbook", "?"))[:100]
        from cryptography.exceptions import InvalidSignature

        if self._hub_key is None:
            self._hub_key = load_hub_key(self.settings.state_dir)
        if self._hub_key is None:
            raise Refused("no pinned hub key on this node (STATE_DIR/hub.pub): cannot authenticate jobs", job_id, name)
        try:
            self._hub_key.verify(base64.b64decode(envelope["signature"], validate=True), payload.encode())
        except (InvalidSignature, ValueError):
            raise Refused("bad signature: not signed by the hub this node joined", job_id, name) from None
        if not JOB_ID_RE.match(str(job.get("id", ""))):
            raise Refused("job id is not of the form the hub issues", job_id, name)
        if job.get("v") != JOB_VERSION:
            raise Refused(f"job version {job.get('v')!r} is not supported", job_id, name)
        if job.get("node") != self.settings.node:
            raise Refused(f"job is for node {job.get('node')!r}, this is {self.settings.node!r}", job_id, name)
        expires, issued = job.get("expires"), job.get("issued")
        if not isinstance(expires, int | float) or not isinstance(issued, int | float):
            raise Refused("job has no valid issue and expiry times", job_id, name)
        if expires <= now:
            raise Refused(f"job expired {now - expires:.0f}s ago (its approval is no longer valid)", job_id, name)
        if issued > now + SKEW:
            raise Refused("job is issued in the future (clock skew?)", job_id, name)
        if self._seen(job_id, now):
            raise Refused("replayed: this job id has already been received", job_id, name)
        mode = job.get("mode")
        if mode not in MODES:
            raise Refused(f"unknown mode {mode!r}", job_id, name)
        if not self.settings.exec:
            raise Refused("remote execution is disabled on this node (exec = false)", job_id, name)
        if not pbmod.NAME_RE.match(name):
            raise Refused(f"{name!r} is not a playbook name", job_id, name)
        allow = list(self.settings.allow_playbooks or [])
        if allow and name not in allow:
            raise Refused(f"playbook {name!r} is not in this node's allow_playbooks", job_id, name)
        path = self.playbooks_dir / f"{name}.sh"
        if not path.is_file():
            raise Refused(f"playbook {name!r} is not installed on this node ({self.playbooks_dir})", job_id, name)
        try:
            pb = pbmod.load(path)
        except PlaybookError as e:
            raise Refused(f"local playbook is invalid: {e}", job_id, name) from None
        if pb.sha256 != job.get("sha256"):
            raise Refused(f"playbook {name!r} here has SHA-256 {pb.sha256[:16]}..., the approved one "
                          f"{str(job.get('sha256'))[:16]}...: refusing to run a different script", job_id, name)
        max_risk = self.settings.max_risk
        if max_risk not in pbmod.RISKS:
            raise Refused(f"max_risk setting {max_risk!r} is not one of {', '.join(pbmod.RISKS)}", job_id, name)
        # every mode obeys the lock: a "dry run" is still the playbook's own code reading the
        # node (a check of write-file printed a 0600 file), and the hub's word is not a lock
        if pbmod.risk_rank(pb.risk) > pbmod.risk_rank(max_risk):
            raise Refused(f"playbook {name!r} is {pb.risk}; this node runs at most {max_risk}", job_id, name)
        if mode != "run" and not getattr(pb, mode):
            raise Refused(f"playbook {name!r} has no {mode} step", job_id, name)
        try:
            params = pbmod.validate_params(pb, job.get("params"))
        except ValueError as e:
            raise Refused(f"parameters refused by the local header: {e}", job_id, name) from None
        return job, pb, params

    def _seen(self, job_id: str, now: float) -> bool:
        return job_id in (self.state.get(SEEN_KEY) or {})

    def remember(self, job: dict, now: float) -> None:
        seen = {k: v for k, v in (self.state.get(SEEN_KEY) or {}).items() if v > now}
        seen[str(job["id"])] = float(job["expires"])
        if len(seen) > SEEN_MAX:  # expired ones are refused anyway; keep the newest
            seen = dict(sorted(seen.items(), key=lambda kv: kv[1])[-SEEN_MAX:])
        self.state.set(SEEN_KEY, seen)

    # --- execution ----------------------------------------------------------------------

    async def handle(self, envelope: Any) -> wire.JobResult:
        now = time.time()
        try:
            job, pb, params = self.verify(envelope, now)
        except Refused as e:
            log.warning("job %s (%s) refused: %s", e.job_id, e.playbook, e.reason)
            res = wire.JobResult(ts=time.time(), job_id=e.job_id, playbook=e.playbook, status="refused", reason=e.reason[:4000])
            self.report(res)
            return res
        self.remember(job, now)  # before running: a crash mid-run must not allow a second run
        log.info("job %s: %s %s, signed by the hub", job["id"], pb.name, job["mode"])
        self.report(wire.JobResult(ts=time.time(), job_id=job["id"], playbook=pb.name, status="running"))
        try:
            res = await self.execute(job, pb, params)
        except asyncio.CancelledError:
            self.report(wire.JobResult(ts=time.time(), job_id=job["id"], playbook=pb.name, status="failed",
                                       reason="the agent stopped during the run; its process group was killed"))
            raise
        log.info("job %s: %s %s %s", job["id"], pb.name, job["mode"], res.status)
        self.report(res)
        return res

    def _env(self, job: dict, pb: Playbook, script: Path) -> dict[str, str]:
        try:
            home = pwd.getpwuid(os.geteuid()).pw_dir
        except KeyError:
            home = "/"
        return {
            "PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": home,
            "PLAYBOOK_NAME": pb.name, "PLAYBOOK_MODE": job["mode"], "PLAYBOOK_JOB_ID": str(job["id"]),
            "PLAYBOOK_PATH": str(script),
        }

    async def execute(self, job: dict, pb: Playbook, params: dict[str, str]) -> wire.JobResult:
        started = time.monotonic()
        workdir = self.run_dir / str(job["id"])
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True, mode=0o700)
        try:
            data = Path(pb.path).read_bytes()
            if hashlib.sha256(data).hexdigest() != pb.sha256:
                return self._result(job, pb, "refused", None, "", started, "playbook changed while being checked")
            script = workdir / f"{pb.name}.sh"
            fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o500)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            env = {**self._env(job, pb, script), **pbmod.env_of(params)}
            mode = job["mode"]
            argv = ["/bin/bash", str(script)] if mode == "run" else ["/bin/bash", "-c", getattr(pb, mode), pb.name]
            if systemd_booted():
                return await self._spawn_unit(job, pb, argv, env, workdir, started)
            res = await self._spawn(job, pb, argv, env, workdir, started)
            note = ("homelab-agent: systemd is not PID 1 here: the playbook ran as a direct child "
                    "of the agent, inside the agent's own limits\n")
            limit = DRY_OUTPUT_MAX if mode in ("check", "verify") else OUTPUT_MAX
            body = (res.output or "").encode()[-(limit - len(note)):].decode("utf-8", "ignore")
            return msgspec.structs.replace(res, output=note + body)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    async def _spawn(self, job, pb, argv, env, cwd, started) -> wire.JobResult:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, env=env, cwd=str(cwd), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )
        except OSError as e:
            return self._result(job, pb, "failed", None, "", started, f"cannot start bash: {e}")
        self.current = proc
        buf = bytearray()
        reader = asyncio.create_task(_tail(proc, buf))
        status, reason = None, None
        try:
            await asyncio.wait_for(proc.wait(), pb.timeout)
        except TimeoutError:
            status, reason = "timeout", f"killed after the header's timeout of {pb.timeout}s"
            self._kill(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 3)
            except TimeoutError:
                self._kill(proc.pid, signal.SIGKILL)
                await proc.wait()
        except asyncio.CancelledError:
            self._kill(proc.pid, signal.SIGKILL)
            raise
        finally:
            self.current = None
        self._kill(proc.pid, signal.SIGKILL)  # leftovers in the group die with the job
        try:
            await asyncio.wait_for(reader, 2)
        except TimeoutError:  # a child that left the group still holds the pipe
            reader.cancel()
        out = bytes(buf).decode("utf-8", "replace")
        code = proc.returncode
        if status is None:
            status = "succeeded" if code == 0 else "failed"
        return self._result(job, pb, status, code, out, started, reason)

    async def _spawn_unit(self, job, pb, argv, env, cwd, started) -> wire.JobResult:
        """The playbook as ``homelab-job-<id>.service``: systemd-run --pipe hands the unit our
        pipe as its stdout and stderr, and --wait returns its exit status (the service's own
        code, or 1 for a timeout, a signal, OOM). systemd-run's own lines ("Running as unit",
        "Finished with result: X", runtime and CPU used) share that pipe and stay in the output."""
        unit = f"homelab-job-{job['id']}.service"
        cmd = ["systemd-run", f"--unit={unit}", "--wait", "--pipe", "--collect",
               "--service-type=exec", f"--working-directory={cwd}",
               f"--description=homelab playbook {pb.name} (job {job['id']})",
               "-p", f"RuntimeMaxSec={max(1, int(pb.timeout))}", "-p", "TimeoutStopSec=5",
               "-p", f"MemoryMax={int(self.settings.job_memory_max)}", "-p", "KillMode=control-group",
               *[a for k, v in env.items() for a in ("-E", f"{k}={v}")], "--", *argv]
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"}, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            return self._result(job, pb, "failed", None, "", started, f"cannot start systemd-run: {e}")
        self.current = proc
        buf = bytearray()
        reader = asyncio.create_task(_tail(proc, buf))
        try:
            # RuntimeMaxSec ends it; the margin covers systemd's stop timeout and a slow start
            await asyncio.wait_for(proc.wait(), pb.timeout + 30)
        except (TimeoutError, asyncio.CancelledError) as e:
            await self._stop_unit(unit)
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                proc.kill()
                await asyncio.wait_for(proc.wait(), 5)
            if isinstance(e, asyncio.CancelledError):
                reader.cancel()
                raise
        finally:
            self.current = None
        try:
            await asyncio.wait_for(reader, 5)
        except TimeoutError:  # something the unit started outlived it and holds the pipe
            reader.cancel()
        out = bytes(buf).decode("utf-8", "replace")
        result = next((ln.split(":", 1)[1].strip() for ln in reversed(out.splitlines()[-8:])
                       if ln.startswith("Finished with result:")), None)
        code = proc.returncode
        if result == "timeout":
            return self._result(job, pb, "timeout", None, out, started,
                                f"{unit} stopped after the header's timeout of {pb.timeout}s (RuntimeMaxSec)")
        if result in ("oom-kill", "signal", "core-dump"):
            return self._result(job, pb, "failed", None, out, started, f"{unit} ended: {result}")
        if code is None or code < 0:
            return self._result(job, pb, "timeout", None, out, started,
                                f"{unit} still running {pb.timeout + 30:.0f}s in; stopped")
        return self._result(job, pb, "succeeded" if code == 0 else "failed", code, out, started,
                            None if code == 0 or result in (None, "exit-code") else f"{unit}: {result}")

    @staticmethod
    async def _stop_unit(unit: str) -> None:
        with contextlib.suppress(OSError, TimeoutError):
            p = await asyncio.create_subprocess_exec(
                "systemctl", "stop", "--no-block", unit, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            await asyncio.wait_for(p.wait(), 10)

    @staticmethod
    def _kill(pgid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    @staticmethod
    def _result(job, pb, status, code, out, started, reason=None) -> wire.JobResult:
        if job.get("mode") in ("check", "verify") and len(out.encode()) > DRY_OUTPUT_MAX:
            out = out.encode()[-DRY_OUTPUT_MAX:].decode("utf-8", "ignore")
        return wire.JobResult(
            ts=time.time(), job_id=str(job["id"]), playbook=pb.name, status=status, exit_code=code,
            output=out, reason=reason, duration_ms=int((time.monotonic() - started) * 1000),
        )

    # --- polling ------------------------------------------------------------------------

    def client(self) -> HubClient:
        """Its own connection (the long poll must not hold up the shipper's), with the same
        pinned certificate the shipper trusts when the hub serves its own TLS."""
        pinned = Path(self.settings.state_dir) / "hub.crt"
        ctx = None
        if pinned.exists():
            from .tls import pinned_context

            ctx = pinned_context(pinned.read_text())
        return HubClient(self.settings.hub_url, {
            "Authorization": f"Bearer {self.credential}",
            "User-Agent": f"homelab-agent/{__version__}",
        }, ssl=ctx, timeout=POLL_WAIT + 20, connect_timeout=10)

    async def fetch(self, client: HubClient) -> list:
        r = await client.request("GET", f"/v1/jobs?wait={POLL_WAIT}")
        if r.status == 404:
            raise _NoJobs("the hub has no job endpoint")
        body = r.json()
        if r.status != 200:
            raise _NoJobs(f"hub answered {r.status}: {body.get('error', r.reason) if isinstance(body, dict) else r.reason}")
        jobs = body.get("jobs") if isinstance(body, dict) else None
        return jobs if isinstance(jobs, list) else []

    async def run(self, stopping: asyncio.Event) -> None:
        backoff = Backoff(base=1.0, cap=30.0)
        client = self.client()
        try:
            while not stopping.is_set():
                try:
                    jobs = await self.fetch(client)
                    backoff.reset()
                except (HTTPClientError, OSError, ValueError, _NoJobs) as e:
                    delay = backoff.next() + 1
                    log.debug("job poll: %s; next in %.1fs", e, delay)
                    try:
                        async with asyncio.timeout(delay):
                            await stopping.wait()
                    except TimeoutError:
                        pass
                    continue
                for envelope in jobs[:20]:
                    await self.handle(envelope)
        finally:
            await client.close()


class _NoJobs(Exception):
    pass


def systemd_booted() -> bool:
    """sd_booted(3): systemd is PID 1 and systemd-run can reach it."""
    return os.path.isdir("/run/systemd/system") and shutil.which("systemd-run", path=SAFE_PATH) is not None
