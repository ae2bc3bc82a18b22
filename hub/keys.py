"""Typed keys for state shared through the aiohttp application."""

import sqlite3
from collections import Counter

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.settings import Settings
from hub.rejects import Rejects
from hub.store import Writer

SETTINGS = web.AppKey("settings", Settings)
WRITER = web.AppKey("writer", Writer)
READ_DB = web.AppKey("read_db", sqlite3.Connection)
SIGNING_KEY = web.AppKey("signing_key", Ed25519PrivateKey)
STATS = web.AppKey("stats", Counter)
CRED_CACHE = web.AppKey("cred_cache", dict)
REJECTS = web.AppKey("rejects", Rejects)
# Called in the writer thread, inside the transaction, whenever an alert changes state:
# listener(db: sqlite3.Connection, alert: dict) where alert is the alerts row as a dict plus
# "transition" ("pending", "firing", "resolved") and "rule" (the loaded rule object).
# The rules engine calls them; proposals (playbooks) and notifications subscribe.
ALERT_LISTENERS = web.AppKey("alert_listeners", list)
