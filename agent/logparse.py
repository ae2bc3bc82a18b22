"""Parse one log line into a ``Parsed`` record: program, pid, severity, facility, host, message.

Dialects, tried in this order:

- journald JSON (``journalctl -o json``): one object per line; see ``parse_journal``.
- RFC 5424: ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG``.
- RFC 3164 / the traditional file format: ``[<PRI>]Mon DD HH:MM:SS HOST TAG[PID]: MSG``,
  also with an RFC 3339 timestamp (rsyslog's high-precision file format).
- Anything else is kept whole as the message, with nothing inferred from it.

The TAG of the traditional format has no hard rule in practice: real logs hold tags such as
``sshd(pam_unix)``, ``syslogd 1.4.1`` and ``-- root``. A tag is therefore everything up to the
first ``[`` or ``:`` followed by a space, if that is at most 48 characters and at most three
words; otherwise the line has no tag and the whole rest is the message. Trailing whitespace
(including the CR of CRLF files) is not part of the message.

Severity comes from the PRI or journald's PRIORITY. Plain file lines carry none; for those a
level written at the very start of the message (``ERROR:``, ``[warn]``, ``level=error``) is
used, and otherwise severity stays unknown (None) rather than guessed.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from dataclasses import dataclass

FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}

MAX_MESSAGE = 64 * 1024


@dataclass(slots=True)
class Parsed:
    message: str
    ts: float | None = None  # Unix seconds, when the line says when
    program: str | None = None
    pid: int | None = None
    severity: int | None = None
    facility: str | None = None
    host: str | None = None
    unit: str | None = None
    cursor: str | None = None  # journald only


_PRI = re.compile(r"<(\d{1,3})>")
_TS3164 = re.compile(r"([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d{2}):(\d{2}):(\d{2})(?:\.\d+)? ")
_TS3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})? ")
# HOST then TAG: the tag may hold spaces (at most 3 words); the pid is digits in brackets.
_HOST_TAG = re.compile(
    r"(?P<host>\S+) +(?P<prog>[^\s\[:][^\[:]{0,47}?)(?:\[(?P<pid>\d+)\])?:(?: |$)")
# a tag with no host before it, as sent to /dev/log ("<13>Nov 25 17:39:42 prog[pid]: msg")
_TAG_ONLY = re.compile(r"(?P<prog>[^\s\[:][^\[:\s]{0,47})(?:\[(?P<pid>\d+)\])?:(?: |$)")
_W = (r"(emerg(?:ency)?|alert|crit(?:ical)?|fatal|err(?:or)?|warn(?:ing)?|notice|info|debug|trace)")
# "[warn] x", "error: x", "level=error", an all-capitals "ERROR x", or a kernel-style "<3>x"
_LEVEL = re.compile(rf"^(?:\[\s*{_W}\s*\]|{_W}:|level=\"?{_W}\b|<([0-7])>)", re.I)
_LEVEL_CAPS = re.compile(r"^(EMERG|ALERT|CRIT|CRITICAL|FATAL|ERR|ERROR|WARN|WARNING|NOTICE|INFO|DEBUG|TRACE)\s")
_LEVELS = {"emerg": 0, "emergency": 0, "alert": 1, "crit": 2, "critical": 2, "fatal": 2,
           "err": 3, "error": 3, "warn": 4, "warning": 4, "notice": 5, "info": 6,
           "debug": 7, "trace": 7}


def _pri(pri: int) -> tuple[int, str | None]:
    fac = pri >> 3
    return pri & 7, FACILITIES[fac] if fac < len(FACILITIES) else str(fac)


def _year_for(month: int, day: int, now: float) -> int:
    """RFC 3164 has no year: the most recent one that does not put the line in the future
    (a day of slack for clock skew), so December lines read in January land last year."""
    t = time.localtime(now)
    year = t.tm_year
    if (month, day) > (t.tm_mon, t.tm_mday + 1):
        year -= 1
    return year


def _ts3164(m: re.Match, now: float) -> float | None:
    mon = MONTHS.get(m.group(1))
    if mon is None:
        return None
    day, hh, mm, ss = int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5))
    try:
        return time.mktime((_year_for(mon, day, now), mon, day, hh, mm, ss, 0, 0, -1))
    except (OverflowError, ValueError):
        return None


def _ts3339(m: re.Match) -> float | None:
    y, mo, d, hh, mi, ss = (int(m.group(i)) for i in range(1, 7))
    frac = float(m.group(7)) if m.group(7) else 0.0
    tz = m.group(8)
    try:
        if tz is None:  # local time, as rsyslog writes without a zone
            return time.mktime((y, mo, d, hh, mi, ss, 0, 0, -1)) + frac
        base = calendar.timegm((y, mo, d, hh, mi, ss, 0, 0, 0)) + frac
    except (OverflowError, ValueError):
        return None
    if tz != "Z":
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        base -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return base


def level_of(message: str) -> int | None:
    """A severity written at the start of the message itself, or None."""
    m = _LEVEL.match(message)
    if m:
        if m.group(4):
            return int(m.group(4))
        return _LEVELS[next(g for g in m.groups() if g).lower()]
    m = _LEVEL_CAPS.match(message)
    return _LEVELS[m.group(1).lower()] if m else None


def parse_line(line: str, now: float | None = None) -> Parsed:
    """Parse one line of a syslog-style file (or a datagram). Never raises."""
    line = line.rstrip()
    if len(line) > MAX_MESSAGE:
        line = line[:MAX_MESSAGE]
    if line.startswith("{"):
        j = parse_journal(line)
        if j is not None:
            return j
    now = time.time() if now is None else now
    pos = 0
    severity = facility = None
    m = _PRI.match(line)
    if m and int(m.group(1)) < 192:
        severity, facility = _pri(int(m.group(1)))
        pos = m.end()
        if line.startswith("1 ", pos):
            return _parse_5424(line, pos + 2, severity, facility)
    ts = None
    m = _TS3164.match(line, pos)
    if m:
        ts = _ts3164(m, now)
    else:
        m = _TS3339.match(line, pos)
        if m:
            ts = _ts3339(m)
    if m is None:
        # no timestamp: "prog[pid]: msg" as some daemons write (a pid is required, or
        # "ERROR: x" would read as a program), else the line as is
        t = _TAG_ONLY.match(line, pos)
        if t and t.group("pid"):
            return _tagged(line[t.end():], ts, t.group("prog"), t.group("pid"), severity, facility, None)
        msg = line[pos:]
        return Parsed(msg, None, severity=severity if severity is not None else level_of(msg),
                      facility=facility)
    pos = m.end()
    t = _TAG_ONLY.match(line, pos)  # no host: a hostname never ends in ':'
    if t:
        return _tagged(line[t.end():], ts, t.group("prog"), t.group("pid"), severity, facility, None)
    t = _HOST_TAG.match(line, pos)
    if t and t.group("prog").count(" ") <= 2:
        prog = t.group("prog").rstrip()
        return _tagged(line[t.end():], ts, prog, t.group("pid"), severity, facility, t.group("host"))
    host, _, rest = line[pos:].partition(" ")
    return Parsed(rest.strip(), ts, severity=severity if severity is not None else level_of(rest),
                  facility=facility, host=host or None)


def _tagged(msg, ts, prog, pid, severity, facility, host) -> Parsed:
    msg = msg.strip()
    if severity is None:
        severity = level_of(msg)
    return Parsed(msg, ts, program=prog or None, pid=int(pid) if pid else None,
                  severity=severity, facility=facility, host=host)


def _nil(field: str) -> str | None:
    return None if field == "-" else field


def _skip_sd(line: str, pos: int) -> int:
    """Index just past RFC 5424 STRUCTURED-DATA starting at pos ('-' or [..][..])."""
    if line.startswith("-", pos):
        return pos + 1
    n = len(line)
    while pos < n and line[pos] == "[":
        pos += 1
        quoted = False
        while pos < n:
            c = line[pos]
            if c == "\\" and quoted:
                pos += 2
                continue
            if c == '"':
                quoted = not quoted
            elif c == "]" and not quoted:
                pos += 1
                break
            pos += 1
    return pos


def _parse_5424(line: str, pos: int, severity: int, facility: str | None) -> Parsed:
    parts = line[pos:].split(" ", 5)
    if len(parts) < 6:
        parts += ["-"] * (6 - len(parts))
    ts_s, host, app, procid, _msgid, rest = parts
    ts = None
    if ts_s != "-":
        m = _TS3339.match(ts_s + " ")
        ts = _ts3339(m) if m else None
    sd_start = len(line) - len(rest)
    msg_at = _skip_sd(line, sd_start)
    msg = line[msg_at:].lstrip(" ")
    if msg.startswith("\ufeff"):
        msg = msg[1:]
    pid = int(procid) if procid.isdigit() else None
    return Parsed(msg.strip(), ts, program=_nil(app), pid=pid, severity=severity,
                  facility=facility, host=_nil(host))


def _text(v) -> str | None:
    """journald fields: a string, an array of bytes (non-UTF-8 or binary) or null."""
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        if v and all(isinstance(b, int) for b in v):
            return bytes(b & 0xFF for b in v).decode("utf-8", "replace")
        return _text(v[0]) if v else None
    return str(v)


def _int(v) -> int | None:
    s = _text(v)
    return int(s) if s and s.isdigit() else None


def parse_journal(line: str) -> Parsed | None:
    """One ``journalctl -o json`` entry, or None if the line is not a JSON object."""
    try:
        e = json.loads(line)
    except ValueError:
        return None
    if not isinstance(e, dict) or not ("MESSAGE" in e or "__CURSOR" in e or "__REALTIME_TIMESTAMP" in e):
        return None  # some other JSON log line: kept whole by the caller
    return journal_entry(e)


def journal_entry(e: dict) -> Parsed:
    msg = (_text(e.get("MESSAGE")) or "").rstrip()
    if len(msg) > MAX_MESSAGE:
        msg = msg[:MAX_MESSAGE]
    ts = None
    rt = _int(e.get("__REALTIME_TIMESTAMP"))
    if rt is not None:
        ts = rt / 1e6
    fac = _int(e.get("SYSLOG_FACILITY"))
    prio = _int(e.get("PRIORITY"))
    return Parsed(
        msg, ts,
        program=_text(e.get("SYSLOG_IDENTIFIER")) or _text(e.get("_COMM")),
        pid=_int(e.get("SYSLOG_PID")) or _int(e.get("_PID")),
        severity=prio if prio is not None and prio < 8 else None,
        facility=(FACILITIES[fac] if fac < len(FACILITIES) else str(fac)) if fac is not None else None,
        host=_text(e.get("_HOSTNAME")),
        unit=_text(e.get("_SYSTEMD_UNIT")) or _text(e.get("_SYSTEMD_USER_UNIT")),
        cursor=_text(e.get("__CURSOR")),
    )
