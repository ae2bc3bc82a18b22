"""Backup and restore of a hub: the database, its config and its keys, in one tar.gz.

The database is copied with SQLite's online backup API from a read connection, in one step:
in WAL mode that is one read transaction, so the copy is a consistent snapshot while the
writer keeps committing (readers never block the writer). Next to it go ``hub.toml``, the
job-signing key and any TLS material, and ``manifest.json`` with each file's size and
SHA-256. The archive is created mode 0600 because it holds private keys.

Restore verifies every checksum and the database's integrity before it touches the data
directory, refuses while a hub is running on it (unless forced), and moves whatever it
replaces aside into ``pre-restore-<time>/`` instead of deleting it.

After a restore the hub may be *behind* what agents had already had acknowledged. Agents
still hold everything they had not been acked, and resend it; for numbers acked after the
backup the agent's shipper answers the hub's 409 with a counted ``dropped`` marker, so the
gap is recorded honestly rather than hidden (see agent/shipper.py ``_mark_gap``).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import io
import json
import logging
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from agent import __version__
from hub.config import db_path
from hub.errors import BadRequest, Conflict

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
DB_NAME = "homelab.db"
LOCK_NAME = "hub.lock"
# What, besides the database, makes a hub itself: its settings, its identity (signing key,
# TLS certificate and key) and the node profiles a person wrote.
KEY_GLOBS = ("hub.toml", "*.key", "*.pem", "*.crt", "tls/*", "profiles/**/*")


class BackupError(BadRequest):
    """A backup archive that cannot be trusted or used; the message says which member."""


@dataclass
class BackupInfo:
    path: Path
    files: list[dict]
    nodes: dict[str, int]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _extra_files(data_dir: Path, config_file: Path | None) -> list[tuple[str, Path]]:
    """(name in the archive, path) of config and key files, sorted, regular files only."""
    found: dict[str, Path] = {}
    for pattern in KEY_GLOBS:
        for p in sorted(data_dir.glob(pattern)):
            if p.is_file() and not p.is_symlink():
                found[p.relative_to(data_dir).as_posix()] = p
    if config_file and config_file.is_file() and config_file.parent.resolve() != data_dir.resolve():
        found["hub.toml"] = config_file  # HOMELAB_HUB_CONFIG points elsewhere: keep it anyway
    return sorted(found.items())


def snapshot_db(src: Path, dst: Path) -> dict[str, int]:
    """Consistent online copy of the hub database; returns each node's last_seq in it."""
    if not src.exists():
        raise BackupError(f"no hub database at {src}")
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(dst)
    try:
        # pages=-1: one step, one read transaction. Stepwise copies restart whenever the
        # writer commits, which under steady ingest can mean never finishing.
        source.backup(target, pages=-1)
        target.execute("PRAGMA journal_mode = DELETE")  # a single self-contained file
        nodes = dict(target.execute("SELECT name, last_seq FROM nodes ORDER BY name").fetchall())
    finally:
        target.close()
        source.close()
    return nodes


def create(data_dir: Path, out: Path, config_file: Path | None = None) -> BackupInfo:
    """Write a backup of the hub in ``data_dir`` to ``out`` (tar.gz, mode 0600)."""
    data_dir = Path(data_dir)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="homelab-backup-") as tmp:
        snap = Path(tmp) / DB_NAME
        nodes = snapshot_db(db_path(data_dir), snap)
        members = [(DB_NAME, snap), *_extra_files(data_dir, config_file)]
        files = [
            {"name": name, "size": p.stat().st_size, "mode": p.stat().st_mode & 0o777,
             "sha256": sha256_file(p)}
            for name, p in members
        ]
        created = time.time()
        manifest = {
            "format": FORMAT, "created": created, "hub_version": __version__,
            "data_dir": str(data_dir), "files": files, "nodes": nodes,
        }
        body = json.dumps(manifest, indent=2, sort_keys=True).encode()
        partial = out.with_name(out.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # also when the partial file already existed with looser bits
        try:
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
                ti = tarfile.TarInfo(MANIFEST)
                ti.size, ti.mode, ti.mtime = len(body), 0o600, int(created)
                tar.addfile(ti, io.BytesIO(body))
                for name, p in members:
                    ti = tar.gettarinfo(str(p), arcname=name)
                    ti.uid = ti.gid = 0
                    ti.uname = ti.gname = ""
                    with open(p, "rb") as f:
                        tar.addfile(ti, f)
                raw.flush()
                os.fsync(raw.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
        os.replace(partial, out)
    log.info("backup of %s written to %s (%d files)", data_dir, out, len(files))
    return BackupInfo(out, files, nodes)


# -- restore ------------------------------------------------------------------------------


def _read_manifest(tar: tarfile.TarFile, archive: Path) -> dict:
    try:
        member = tar.getmember(MANIFEST)
    except KeyError:
        raise BackupError(f"{archive}: no {MANIFEST}: not a homelab-hub backup") from None
    f = tar.extractfile(member)
    if f is None:
        raise BackupError(f"{archive}: {MANIFEST} is not a regular file")
    try:
        manifest = json.loads(f.read(1 << 20))
    except ValueError as e:
        raise BackupError(f"{archive}: {MANIFEST}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{archive}: {MANIFEST}: unsupported format {manifest.get('format')!r}"
                          if isinstance(manifest, dict) else f"{archive}: {MANIFEST} is not an object")
    names = set()
    for i, entry in enumerate(manifest.get("files") or []):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not _safe_name(name):
            raise BackupError(f"{archive}: {MANIFEST}: files[{i}]: unsafe or missing name {name!r}")
        names.add(name)
    if DB_NAME not in names:
        raise BackupError(f"{archive}: {MANIFEST}: no {DB_NAME} listed")
    return manifest


def _safe_name(name: str) -> bool:
    p = Path(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and name != MANIFEST


def verify(archive: Path, into: Path) -> dict:
    """Extract the files the manifest lists into ``into``, checking size and SHA-256 of each
    and the database's integrity. Raises BackupError naming the first bad member."""
    archive = Path(archive)
    try:
        tar = tarfile.open(archive, "r:gz")
    except (OSError, tarfile.TarError) as e:
        raise BackupError(f"{archive}: cannot read: {e}") from None
    with tar:
        manifest = _read_manifest(tar, archive)
        for entry in manifest["files"]:
            name = entry["name"]
            try:
                member = tar.getmember(name)
            except KeyError:
                raise BackupError(f"{archive}: {name}: listed in the manifest but missing") from None
            if not member.isreg():
                raise BackupError(f"{archive}: {name}: not a regular file")
            src = tar.extractfile(member)
            assert src is not None
            dst = into / name
            dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            h = hashlib.sha256()
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                try:
                    for chunk in iter(functools.partial(src.read, 1 << 20), b""):
                        h.update(chunk)
                        out.write(chunk)
                except (OSError, EOFError, tarfile.TarError, zlib.error) as e:
                    raise BackupError(f"{archive}: {name}: truncated or corrupt: {e}") from None
            if h.hexdigest() != entry.get("sha256") or dst.stat().st_size != entry.get("size"):
                raise BackupError(f"{archive}: {name}: checksum mismatch (the archive is damaged or was altered)")
            os.chmod(dst, int(entry.get("mode", 0o600)) & 0o777)
    db = sqlite3.connect(f"file:{into / DB_NAME}?mode=ro", uri=True)
    try:
        ok = db.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise BackupError(f"{archive}: {DB_NAME}: not a usable database: {e}") from None
    finally:
        db.close()
    if ok != "ok":
        raise BackupError(f"{archive}: {DB_NAME}: integrity check failed: {ok}")
    return manifest


def lock_holder(data_dir: Path) -> str | None:
    """'pid N' of the hub serving ``data_dir`` (it holds an exclusive flock on its lock file,
    hub/backup/web.py), or None. The probe takes the lock and releases it at once, leaving it
    to the app that takes it for as long as it serves."""
    lock = Path(data_dir) / LOCK_NAME
    if not lock.exists():
        return None
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
            return None
        except BlockingIOError:
            f.seek(0)
            return f.read().strip() or "pid unknown"


def hub_running(data_dir: Path) -> str | None:
    """Why we think a hub is using ``data_dir`` right now, or None.

    Two checks: the lock a serving hub holds (hub/backup/web.py), and, for hubs of an
    older build or other tools, any process with the database open (Linux /proc)."""
    who = lock_holder(data_dir)
    if who:
        return f"a hub holds {data_dir / LOCK_NAME} ({who})"
    target = str((data_dir / DB_NAME).resolve())
    me = os.getpid()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        if int(fd_dir.parent.name) == me:
            continue
        try:
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == target:
                        return f"process {fd_dir.parent.name} has {target} open"
        except OSError:
            continue
    return None


def restore(archive: Path, data_dir: Path, force: bool = False) -> dict:
    """Replace the hub state in ``data_dir`` by the backup. What it replaces is kept in
    ``data_dir/pre-restore-<unix time>/``. Returns the manifest plus ``moved_aside``."""
    data_dir = Path(data_dir)
    if not force:
        why = hub_running(data_dir)
        if why:
            raise Conflict(f"refusing to restore into {data_dir}: {why}; stop the hub first (or --force)")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=data_dir))
    try:
        manifest = verify(archive, staging)
        aside = data_dir / f"pre-restore-{int(time.time())}"
        moved = []
        # A stale -wal next to the restored file would be replayed into it: move it too.
        # Config and keys the backup did not have go aside too: the result is the backup.
        replaced = {e["name"] for e in manifest["files"]} | {DB_NAME + "-wal", DB_NAME + "-shm"}
        replaced |= {name for name, _p in _extra_files(data_dir, None)}
        for name in sorted(replaced):
            cur = data_dir / name
            if cur.exists():
                (aside / name).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.replace(cur, aside / name)
                moved.append(name)
        for entry in manifest["files"]:
            dst = data_dir / entry["name"]
            dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.replace(staging / entry["name"], dst)
        # The snapshot was stored in rollback-journal mode; the hub wants WAL.
        db = sqlite3.connect(data_dir / DB_NAME)
        db.execute("PRAGMA journal_mode = WAL")
        db.close()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest["moved_aside"] = str(aside) if moved else None
    log.info("restored %s into %s (previous files in %s)", archive, data_dir, manifest["moved_aside"])
    return manifest
