"""journald's files read in-process through libsystemd's sd-journal API (sd-journal(3)),
with ctypes: a ``journalctl`` child cost 7.8 MB RSS, this 1.4 MB. Only what the logs
collector needs. Every call's negative return is -errno, raised as a RuntimeError naming it."""

from __future__ import annotations

import ctypes
import os
from ctypes import POINTER, byref, c_char_p, c_int, c_size_t, c_uint64, c_void_p

LIBRARY = "libsystemd.so.0"
LOCAL_ONLY = 1  # SD_JOURNAL_LOCAL_ONLY

_SIGNATURES = {  # name: argument types; every one returns int
    "sd_journal_open": (POINTER(c_void_p), c_int),
    "sd_journal_open_directory": (POINTER(c_void_p), c_char_p, c_int),
    "sd_journal_set_data_threshold": (c_void_p, c_size_t),
    "sd_journal_get_fd": (c_void_p,),
    "sd_journal_process": (c_void_p,),
    "sd_journal_get_timeout": (c_void_p, POINTER(c_uint64)),
    "sd_journal_next": (c_void_p,),
    "sd_journal_previous": (c_void_p,),
    "sd_journal_seek_head": (c_void_p,),
    "sd_journal_seek_tail": (c_void_p,),
    "sd_journal_seek_cursor": (c_void_p, c_char_p),
    "sd_journal_test_cursor": (c_void_p, c_char_p),
    "sd_journal_get_cursor": (c_void_p, POINTER(c_void_p)),
    "sd_journal_get_realtime_usec": (c_void_p, POINTER(c_uint64)),
    "sd_journal_get_data": (c_void_p, c_char_p, POINTER(c_void_p), POINTER(c_size_t)),
}
_lib: ctypes.CDLL | None = None


def load() -> ctypes.CDLL:
    """The library with every function declared; OSError where it cannot be loaded."""
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(LIBRARY)
        for name, argtypes in _SIGNATURES.items():
            f = getattr(lib, name)
            f.argtypes, f.restype = argtypes, c_int
        lib.sd_journal_close.argtypes, lib.sd_journal_close.restype = (c_void_p,), None
        _lib = lib
    return _lib


_libc = ctypes.CDLL(None)  # the process's own libc: for free(3) of the cursor strings
_libc.free.argtypes, _libc.free.restype = (c_void_p,), None


class Journal:
    """An open journal: the system's local one, or the files in ``directory``."""

    def __init__(self, directory: str | None = None, threshold: int = 0):
        self.lib, self.j = load(), c_void_p()
        if directory:
            self._call("open_directory", byref(self.j), os.fsencode(directory), 0)
        else:
            self._call("open", byref(self.j), LOCAL_ONLY)
        self._call("set_data_threshold", self.j, threshold)
        # before the first read: changes from then on wake it (sd_journal_get_fd(3))
        self.fd = self._call("get_fd", self.j)

    def _call(self, name: str, *args) -> int:
        r = getattr(self.lib, f"sd_journal_{name}")(*args)
        if r < 0:
            raise RuntimeError(f"sd_journal_{name}: {os.strerror(-r)}")
        return r

    def close(self) -> None:
        if self.j:
            self.lib.sd_journal_close(self.j)
            self.j = c_void_p()

    def next(self) -> bool:
        return self._call("next", self.j) > 0

    def previous(self) -> bool:
        return self._call("previous", self.j) > 0

    def seek_head(self) -> None:
        self._call("seek_head", self.j)

    def seek_tail(self) -> None:
        self._call("seek_tail", self.j)

    def seek_cursor(self, cursor: str) -> None:
        self._call("seek_cursor", self.j, cursor.encode())

    def test_cursor(self, cursor: str) -> bool:
        return self._call("test_cursor", self.j, cursor.encode()) > 0

    def process(self) -> None:
        self._call("process", self.j)

    def timeout(self) -> float | None:
        """When to look again even without a wakeup, in time.monotonic() seconds."""
        usec = c_uint64()
        self._call("get_timeout", self.j, byref(usec))
        return None if usec.value == 2**64 - 1 else usec.value / 1e6

    def cursor(self) -> str:
        p = c_void_p()
        self._call("get_cursor", self.j, byref(p))
        try:
            return ctypes.string_at(p).decode()
        finally:
            _libc.free(p)

    def realtime(self) -> int:
        usec = c_uint64()
        self._call("get_realtime_usec", self.j, byref(usec))
        return usec.value

    def get(self, field: str, limit: int) -> str | None:
        """The field of the current entry (at most ``limit`` bytes of it), or None if it has
        none or it cannot be read (a corrupt field costs that field, not the reader)."""
        data, size = c_void_p(), c_size_t()
        key = field.encode()
        if self.lib.sd_journal_get_data(self.j, key, byref(data), byref(size)) < 0 or not data.value:
            return None
        n = min(size.value, len(key) + 1 + limit)
        return ctypes.string_at(data.value + len(key) + 1, n - len(key) - 1).decode("utf-8", "replace")
