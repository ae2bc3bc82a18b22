"""User names for uids, as collectors report them: one bounded cache for the whole agent."""

from __future__ import annotations

import functools
import pwd


@functools.lru_cache(maxsize=4096)
def user_name(uid: int) -> str:
    """The account name of ``uid``, or the number itself where the account does not exist."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
