"""Enrolment and node credentials.

A join token is single-use and expires; only its SHA-256 is stored. Redeeming it
gives the node a long random credential, of which the hub also stores only the hash.
The hub's Ed25519 signing key (for jobs sent to nodes) is created on first use; its
public half is handed to the agent at join time and pinned there.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import sqlite3
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.errors import BadRequest, Unauthorized

NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# what the hub issues (token_urlsafe with a prefix), with room to spare; anything else in an
# Authorization header is refused before it is hashed or looked up
CREDENTIAL_RE = re.compile(r"^[A-Za-z0-9_.~+/=-]{1,512}$")


def hash_secret(secret: str) -> str:
    # surrogateescape: header bytes that are not UTF-8 arrive as lone surrogates
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def check_node_name(name: str) -> str:
    if not NODE_RE.match(name or ""):
        raise BadRequest(
            f"invalid node name {name!r}: use letters, digits, '.', '_' or '-' (at most 63, starting with a letter or digit)"
        )
    return name


def enroll(db: sqlite3.Connection, name: str, ttl: float) -> str:
    """Create (or re-arm) a node and return a one-time join token for it."""
    check_node_name(name)
    now = time.time()
    token = "hlj_" + secrets.token_urlsafe(24)
    db.execute("INSERT OR IGNORE INTO nodes (name, created) VALUES (?, ?)", (name, now))
    db.execute(
        "INSERT INTO join_tokens (token_hash, node, created, expires) VALUES (?, ?, ?, ?)",
        (hash_secret(token), name, now, now + ttl),
    )
    return token


def redeem(db: sqlite3.Connection, token: str, address: str | None) -> tuple[str, str]:
    """Spend a join token: returns (node, credential). Runs in the writer's transaction."""
    row = db.execute(
        "SELECT node, expires, used FROM join_tokens WHERE token_hash = ?", (hash_secret(token or ""),)
    ).fetchone()
    if row is None:
        raise Unauthorized("unknown join token")
    if row["used"] is not None:
        raise Unauthorized("join token already used")
    if row["expires"] < time.time():
        raise Unauthorized("join token expired")
    credential = "hln_" + secrets.token_urlsafe(32)
    db.execute(
        "UPDATE join_tokens SET used = ?, used_from = ? WHERE token_hash = ?",
        (time.time(), address, hash_secret(token)),
    )
    db.execute(
        "UPDATE nodes SET credential_hash = ? WHERE name = ?", (hash_secret(credential), row["node"])
    )
    return row["node"], credential


def node_for(db: sqlite3.Connection, credential: str) -> str | None:
    row = db.execute(
        "SELECT name FROM nodes WHERE credential_hash = ?", (hash_secret(credential),)
    ).fetchone()
    return row[0] if row else None


def bearer(header: str | None) -> str:
    if not header or not header.startswith("Bearer "):
        raise Unauthorized("missing credential: send 'Authorization: Bearer <node credential>'")
    credential = header[7:].strip()
    if not CREDENTIAL_RE.match(credential):
        raise Unauthorized("malformed credential: expected 'Authorization: Bearer <node credential>'")
    return credential


def revoke(db: sqlite3.Connection, name: str) -> None:
    """Forget node NAME's credential and spend its unused join tokens; its history stays.
    Runs in a transaction. Takes effect at the next request: credentials are never cached."""
    if db.execute("SELECT 1 FROM nodes WHERE name = ?", (name,)).fetchone() is None:
        raise BadRequest(f"no node named {name!r}")
    now = time.time()
    db.execute("UPDATE nodes SET credential_hash = NULL WHERE name = ?", (name,))
    db.execute("UPDATE join_tokens SET used = ?, used_from = 'revoked' WHERE node = ? AND used IS NULL", (now, name))


def signing_key(data_dir: Path) -> Ed25519PrivateKey:
    path = Path(data_dir) / "hub_signing.key"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    from hub.store import private_dir

    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def public_key_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()
