"""Typed keys for state shared through the aiohttp application."""

import sqlite3
from collections import Counter

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.settings import Settings

from .store import Writer

SETTINGS = web.AppKey("settings", Settings)
WRITER = web.AppKey("writer", Writer)
READ_DB = web.AppKey("read_db", sqlite3.Connection)
SIGNING_KEY = web.AppKey("signing_key", Ed25519PrivateKey)
STATS = web.AppKey("stats", Counter)
CRED_CACHE = web.AppKey("cred_cache", dict)
