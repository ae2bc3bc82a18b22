"""Compiling rule conditions, field paths, templates and twin queries, once, at load.

A condition is YAML data: a mapping ANDs its entries; each entry is either a combinator
(``all``, ``any``, ``not``, ``macro``) or ``FIELD: TEST``. A TEST is a scalar (equality),
a list (membership) or a mapping of operators. Everything is compiled to closures over
``(event, extra)`` so evaluating a rule costs a few Python calls and no dict building:
``event`` is the wire Struct, ``extra`` holds the node, regex captures, metric labels and
the aggregate value. Every error raised here carries the path of the offending key so the
loader can name the file and line.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment

from hub.schema import SECRET_COLUMNS

MISSING = object()
Path_ = tuple  # a path into the YAML document, e.g. ("rules", 0, "event", "where")
Pred = Callable[[Any, dict], bool]
Getter = Callable[[Any, dict], Any]
COMBINATORS = ("all", "any", "not", "macro")


class CompileError(ValueError):
    """A rule that cannot be compiled; ``path`` locates the key in the YAML document."""

    def __init__(self, message: str, path: Path_):
        super().__init__(message)
        self.path = tuple(path)


# --- field paths ----------------------------------------------------------------------


def _step(value: Any, part: str) -> Any:
    if value is MISSING or value is None:
        return MISSING
    if isinstance(value, dict):
        return value.get(part, MISSING)
    if isinstance(value, list | tuple):
        try:
            return value[int(part)]
        except (ValueError, IndexError):
            return MISSING
    return getattr(value, part, MISSING)


def compile_path(path: str, extras: frozenset[str]) -> Getter:
    """'message' -> event.message; 'address' (a capture) -> extra['address'];
    'facts.os.name' -> event.facts['os']['name']. Unknown paths read as missing."""
    parts = path.split(".")
    head, rest = parts[0], parts[1:]
    if head in extras:
        if not rest:
            return lambda ev, ex: ex.get(head, MISSING)

        def from_extra(ev, ex):
            v = ex.get(head, MISSING)
            for p in rest:
                v = _step(v, p)
            return v

        return from_extra
    if not rest:
        return lambda ev, ex: getattr(ev, head, MISSING)

    def from_event(ev, ex):
        v = getattr(ev, head, MISSING)
        for p in rest:
            v = _step(v, p)
        return v

    return from_event


# --- operators ------------------------------------------------------------------------


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_NUMS = (int, float)


def _cmp(op: Callable[[Any, Any], bool], want: Any) -> Callable[[Any], bool]:
    # type(v) in ... rather than isinstance: bool is not a number here, and it is faster
    if _num(want):
        return lambda v: type(v) in _NUMS and op(v, want)
    return lambda v: type(v) is str and op(v, want)


def _operator(name: str, arg: Any, at: Path_) -> Callable[[Any], bool]:
    if name in ("eq", "ne", "gt", "gte", "lt", "lte"):
        if name in ("gt", "gte", "lt", "lte") and not (_num(arg) or isinstance(arg, str)):
            raise CompileError(f"{name} needs a number or string, got {arg!r}", at)
        if name == "eq":
            return lambda v: v == arg
        if name == "ne":
            return lambda v: v is not MISSING and v != arg
        if _num(arg):  # the hot path of metric thresholds: no extra call per comparison
            return {"gt": lambda v: type(v) in _NUMS and v > arg, "gte": lambda v: type(v) in _NUMS and v >= arg,
                    "lt": lambda v: type(v) in _NUMS and v < arg, "lte": lambda v: type(v) in _NUMS and v <= arg}[name]
        import operator as o

        return _cmp({"gt": o.gt, "gte": o.ge, "lt": o.lt, "lte": o.le}[name], arg)
    if name in ("in", "not_in"):
        if not isinstance(arg, list):
            raise CompileError(f"{name} needs a list, got {type(arg).__name__}", at)
        items = frozenset(x for x in arg if not isinstance(x, dict | list))
        if name == "in":
            return lambda v: v in items
        return lambda v: v is not MISSING and v not in items
    if name in ("regex", "not_regex"):
        rx = compile_regex(arg, at)
        if name == "regex":
            return lambda v: isinstance(v, str) and rx.search(v) is not None
        return lambda v: isinstance(v, str) and rx.search(v) is None
    if name in ("contains", "startswith", "endswith"):
        if not isinstance(arg, str):
            raise CompileError(f"{name} needs a string, got {type(arg).__name__}", at)
        if name == "contains":
            return lambda v: isinstance(v, str | list) and arg in v
        if name == "startswith":
            return lambda v: isinstance(v, str) and v.startswith(arg)
        return lambda v: isinstance(v, str) and v.endswith(arg)
    if name == "exists":
        if not isinstance(arg, bool):
            raise CompileError("exists needs true or false", at)
        return lambda v: (v is not MISSING and v is not None) == arg
    raise CompileError(
        f"unknown operator {name!r} (known: eq, ne, gt, gte, lt, lte, in, not_in, regex,"
        " not_regex, contains, startswith, endswith, exists, some)", at)


OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "regex", "not_regex",
             "contains", "startswith", "endswith", "exists", "some")


def compile_regex(pattern: Any, at: Path_) -> re.Pattern:
    if not isinstance(pattern, str):
        raise CompileError(f"a regex must be a string, got {type(pattern).__name__}", at)
    try:
        return re.compile(pattern)
    except re.error as e:
        raise CompileError(f"bad regex {pattern!r}: {e}", at) from None


def _some(spec: Any, scope: Scope, at: Path_) -> Callable[[Any], bool]:
    inner = Scope(scope.macros, scope.macro_paths, frozenset())
    sub = compile_condition(spec, inner, at)
    return lambda v: isinstance(v, list | tuple) and any(sub(x, {}) for x in v)


def _test(spec: Any, scope: Scope, at: Path_) -> Callable[[Any], bool]:
    if isinstance(spec, list):
        return _operator("in", spec, at)
    if isinstance(spec, dict):
        if not spec:
            raise CompileError("an empty test matches nothing useful", at)
        tests = [_some(v, scope, (*at, k)) if k == "some" else _operator(str(k), v, (*at, k))
                 for k, v in spec.items()]
        if len(tests) == 1:
            return tests[0]
        return lambda v: all(t(v) for t in tests)
    return lambda v: v == spec


class Scope:
    """What a condition may refer to: macros (compiled lazily, cycles refused) and extras."""

    def __init__(self, macros: dict[str, Any], macro_paths: dict[str, Path_], extras: frozenset[str],
                 fields: frozenset[str] | None = None):
        self.macros, self.macro_paths, self.extras = macros, macro_paths, extras
        self.fields = fields  # the event kind's fields, when known: a typo is an error, not a silent miss
        self._stack: list[str] = []

    def macro(self, name: Any, at: Path_) -> Pred:
        if not isinstance(name, str) or name not in self.macros:
            known = ", ".join(sorted(self.macros)) or "none defined"
            raise CompileError(f"unknown macro {name!r} (known: {known})", at)
        if name in self._stack:
            raise CompileError(f"macro {name!r} refers to itself", at)
        self._stack.append(name)
        try:
            return compile_condition(self.macros[name], self, self.macro_paths[name])
        finally:
            self._stack.pop()


def compile_condition(spec: Any, scope: Scope, at: Path_) -> Pred:
    if not isinstance(spec, dict):
        raise CompileError(f"a condition must be a mapping, got {type(spec).__name__}", at)
    preds: list[Pred] = []
    for key, val in spec.items():
        here = (*at, key)
        if key in ("all", "any"):
            if not isinstance(val, list) or not val:
                raise CompileError(f"{key} needs a non-empty list of conditions", here)
            subs = [compile_condition(c, scope, (*here, i)) for i, c in enumerate(val)]
            preds.append(_and(subs) if key == "all" else _any(subs))
        elif key == "not":
            preds.append(_not(compile_condition(val, scope, here)))
        elif key == "macro":
            preds.append(scope.macro(val, here))
        else:
            if not isinstance(key, str) or not key:
                raise CompileError(f"a field name must be a string, got {key!r}", here)
            preds.append(_field_pred(key, val, scope, here))
    return _and(preds)


def _field_pred(key: str, val: Any, scope: Scope, at: Path_) -> Pred:
    head = key.split(".", 1)[0]
    if scope.fields is not None and head not in scope.fields and head not in scope.extras:
        known = ", ".join(sorted(scope.fields | scope.extras))
        raise CompileError(f"unknown field {head!r} (this event has: {known})", at)
    test = _test(val, scope, at)
    if "." not in key and key not in scope.extras:  # a plain event attribute: one call less
        if not isinstance(val, dict | list):
            return lambda ev, ex: getattr(ev, key, MISSING) == val
        return lambda ev, ex: test(getattr(ev, key, MISSING))
    if "." not in key:
        if not isinstance(val, dict | list):
            return lambda ev, ex: ex.get(key, MISSING) == val
        return lambda ev, ex: test(ex.get(key, MISSING))
    get = compile_path(key, scope.extras)
    return lambda ev, ex: test(get(ev, ex))


def _and(preds: list[Pred]) -> Pred:
    # unrolled for the common sizes: all() over a generator costs more than the tests
    if not preds:
        return lambda ev, ex: True
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda ev, ex: a(ev, ex) and b(ev, ex)
    if len(preds) == 3:
        a, b, c = preds
        return lambda ev, ex: a(ev, ex) and b(ev, ex) and c(ev, ex)
    return lambda ev, ex: all(p(ev, ex) for p in preds)


def _any(preds: list[Pred]) -> Pred:
    return lambda ev, ex: any(p(ev, ex) for p in preds)


def _not(pred: Pred) -> Pred:
    return lambda ev, ex: not pred(ev, ex)


# --- templates ------------------------------------------------------------------------

_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class Template:
    """A string with {{ field }} references, rendered in Jinja's sandbox. Non-strings
    are constants. Names are checked at load against the fields the rule provides."""

    def __init__(self, source: Any, known: frozenset[str] | None, at: Path_):
        self.source = source
        self.const = not isinstance(source, str) or ("{{" not in source and "{%" not in source)
        if self.const:
            return
        try:
            ast = _env.parse(source)
            self.tpl = _env.from_string(source)
        except TemplateError as e:
            raise CompileError(f"bad template {source!r}: {e}", at) from None
        if known is not None:
            missing = sorted(meta.find_undeclared_variables(ast) - known)
            if missing:
                raise CompileError(
                    f"template {source!r} uses unknown field(s) {', '.join(missing)}"
                    f" (available: {', '.join(sorted(known))})", at)

    def render(self, fields: dict) -> Any:
        if self.const:
            return self.source
        return self.tpl.render(fields)


# --- twin-state SQL -------------------------------------------------------------------

_READ_OPS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
             getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
_OP_NAMES = {v: k for k, v in vars(sqlite3).items() if k.startswith("SQLITE_") and isinstance(v, int)
             and k not in ("SQLITE_OK", "SQLITE_DENY", "SQLITE_IGNORE")}


SECRET_TABLES = {"join_tokens"}


class ReadOnlyGuard:
    """sqlite3 authorizer that allows reading only; remembers what it refused."""

    def __init__(self):
        self.refused: str | None = None

    def __call__(self, op, a, b, db, trigger):
        if op == sqlite3.SQLITE_READ and (a in SECRET_TABLES or (a, b) in SECRET_COLUMNS):
            return sqlite3.SQLITE_IGNORE  # reads as NULL: secrets never reach an alert or a webhook
        if op in _READ_OPS:
            return sqlite3.SQLITE_OK
        self.refused = _OP_NAMES.get(op, str(op)).removeprefix("SQLITE_")
        return sqlite3.SQLITE_DENY


def run_query(db: sqlite3.Connection, sql: str, params: dict, timeout: float,
              max_rows: int = 1000) -> tuple[list[str], list[tuple]]:
    """Run a rule's query on a read-only connection, reads only, within ``timeout``."""
    guard = ReadOnlyGuard()
    deadline = time.monotonic() + timeout
    db.set_authorizer(guard)
    db.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
    try:
        cur = db.execute(sql, params)
        cols = [d[0] for d in cur.description or ()]
        return cols, cur.fetchmany(max_rows)
    except sqlite3.DatabaseError as e:
        if guard.refused:
            raise PermissionError(f"query may only read; it tried {guard.refused}") from None
        if "interrupted" in str(e):
            raise TimeoutError(f"query ran longer than {timeout}s") from None
        raise
    finally:
        db.set_authorizer(None)
        db.set_progress_handler(None, 0)


_schema_db: sqlite3.Connection | None = None


def schema_db() -> sqlite3.Connection | None:
    """An empty in-memory copy of the hub schema, to check rule SQL at load time."""
    global _schema_db
    if _schema_db is None:
        from hub.schema import migrate

        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        try:
            migrate(db)
        except Exception as e:  # noqa: BLE001 - a broken migration elsewhere must not stop rules
            import logging

            logging.getLogger(__name__).warning("cannot build the schema to check rule SQL: %s", e)
            return None
        _schema_db = db
    return _schema_db


def check_query(sql: str, at: Path_) -> list[str] | None:
    """Refuse SQL that writes or does not compile; return its columns (None if unknown)."""
    head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    if head not in ("SELECT", "WITH", "VALUES"):
        raise CompileError(f"query must be a single SELECT (it starts with {head or 'nothing'!r})", at)
    db = schema_db()
    if db is None:
        return None
    try:
        cols, _ = run_query(db, sql, {"now": 0.0}, 2.0, 0)
    except PermissionError as e:
        raise CompileError(str(e), at) from None
    except (sqlite3.Error, sqlite3.Warning, TimeoutError) as e:
        raise CompileError(f"bad query: {e}", at) from None
    return cols
