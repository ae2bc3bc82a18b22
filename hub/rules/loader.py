"""Loading rule files: YAML with line numbers, the shipped JSON Schema, then compilation.

Every problem becomes a ``RuleError`` naming the file, the line and the key path
(``rules[2].event.where.message.regex``). A file with any error is refused whole, as
promtool does, so a half-understood file never runs; other files still load.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from agent import wire
from agent.settings import parse_duration
from hub.rules.conditions import (
    CompileError,
    Pred,
    Scope,
    Template,
    check_query,
    compile_condition,
    compile_path,
    compile_regex,
)

log = logging.getLogger(__name__)
SCHEMA_PATH = Path(__file__).with_name("schema.json")
SEVERITIES = ("info", "warning", "critical")
SOURCES = ("event", "metric", "absent", "query")
BASE_FIELDS = frozenset({"node", "rule", "severity", "value", "count", "first_seen", "last_seen"})


class RuleError(ValueError):
    def __init__(self, file: str, line: int | None, key: str, message: str):
        self.file, self.line, self.key, self.message = file, line, key, message
        at = f"{file}:{line}" if line else file
        super().__init__(f"{at}: {key}: {message}" if key else f"{at}: {message}")


@cache
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def key_path(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# --- YAML with marks ------------------------------------------------------------------


def _marks(node: yaml.Node, path: tuple, lines: dict, dups: list) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k.start_mark)
            if key in seen:
                dups.append(((*path, key), k.start_mark.line + 1))
            seen.add(key)
            lines[(*path, key)] = k.start_mark.line + 1
            _marks(v, (*path, key), lines, dups)
            lines[(*path, key)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _marks(v, (*path, i), lines, dups)


class Doc:
    """A parsed file: its data and the line of every key path."""

    def __init__(self, file: str, text: str):
        self.file = file
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
            problem = getattr(e, "problem", None) or str(e)
            raise RuleError(file, mark.line + 1 if mark else None, "", f"invalid YAML: {problem}") from None
        self.lines: dict[tuple, int] = {}
        dups: list = []
        if node is not None:
            _marks(node, (), self.lines, dups)
        if dups:
            path, line = dups[0]
            raise RuleError(file, line, key_path(path), "duplicate key")

    def line(self, path: tuple) -> int | None:
        path = tuple(path)
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path)

    def error(self, path: tuple, message: str) -> RuleError:
        return RuleError(self.file, self.line(path), key_path(path), message)


# --- compiled rule --------------------------------------------------------------------


@dataclass
class Rule:
    name: str
    file: str
    line: int | None
    source: str  # event | metric | absent | query
    severity: str = "warning"
    description: str = ""
    kind: str | None = None  # event kind ("metrics" for metric rules)
    where: Pred | None = None
    excepts: list[Pred] = field(default_factory=list)
    extract: list[tuple[Any, Any]] = field(default_factory=list)  # (getter, compiled regex)
    metric: str | None = None
    metric_labels: dict[str, str] = field(default_factory=dict)
    agg_fn: str | None = None
    agg_field: Any = None
    window: float = 0.0
    horizon: float = 0.0
    when: Pred | None = None
    group_by: list[tuple[str, Any]] = field(default_factory=list)
    for_: float = 0.0
    keep_firing_for: float = 0.0
    throttle: float = 0.0
    inhibited_by: list[tuple[str, list[str]]] = field(default_factory=list)
    labels: dict[str, Template] = field(default_factory=dict)
    annotations: dict[str, Template] = field(default_factory=dict)
    propose: list[tuple[str, dict[str, Template], bool]] = field(default_factory=list)
    propose_if: list[str | None] = field(default_factory=list)  # if_output regex per candidate
    notify: bool = True
    sql: str | None = None
    every: float = 60.0
    timeout: float = 2.0
    absent_for: float = 0.0
    spec: dict = field(default_factory=dict)
    macros: dict = field(default_factory=dict)

    @property
    def pulse(self) -> bool:
        """Each matching event is an occurrence; nothing says when it stops being true."""
        return self.source == "event" and self.agg_fn is None and self.when is None

    @property
    def periodic(self) -> bool:
        return self.source in ("absent", "query")

    def to_json(self) -> dict:
        return {"name": self.name, "file": self.file, "line": self.line, "source": self.source,
                "kind": self.kind, "severity": self.severity, "description": self.description,
                "for": self.for_, "keep_firing_for": self.keep_firing_for, "throttle": self.throttle,
                "playbooks": [p for p, _, _ in self.propose]}


class _All(frozenset):
    """Every name is an extra (metric rules have no event fields of their own)."""

    def __contains__(self, item: object) -> bool:
        return True


@cache
def struct_fields(kind: str) -> frozenset[str]:
    for t in wire.AnyEvent.__args__:  # type: ignore[attr-defined]
        if t.__struct_config__.tag == kind:
            return frozenset(t.__struct_fields__)
    return frozenset()


def _dur(spec: dict, key: str, path: tuple, doc: Doc, default: float = 0.0) -> float:
    if key not in spec:
        return default
    try:
        return parse_duration(spec[key])
    except ValueError as e:
        raise doc.error((*path, key), str(e)) from None


def compile_rule(spec: dict, path: tuple, doc: Doc, macros: dict, macro_paths: dict) -> Rule:
    sources = [s for s in SOURCES if s in spec]
    if len(sources) != 1:
        what = ", ".join(sources) if sources else "none"
        raise doc.error(path, f"a rule needs exactly one of {', '.join(SOURCES)} (has {what})")
    src = sources[0]
    r = Rule(name=spec["name"], file=doc.file, line=doc.line(path), source=src, spec=spec,
             severity=spec.get("severity", "warning"), description=spec.get("description", ""),
             notify=spec.get("notify", True), macros=macros)
    captures: set[str] = set()
    known: set[str] | None = set(BASE_FIELDS)
    extras: frozenset[str]
    if src == "event":
        ev = spec["event"]
        r.kind = ev["kind"]
        for pat in ev.get("extract", {}).values():
            try:
                captures |= set(compile_regex(pat, ()).groupindex)
            except CompileError:
                pass  # reported below with its path
        extras = frozenset({"node", "value", *captures})
        known = (set(BASE_FIELDS) | struct_fields(r.kind) | captures) if struct_fields(r.kind) else None
    elif src == "metric":
        m = spec["metric"]
        r.kind, r.metric = "metrics", m if isinstance(m, str) else m["name"]
        r.metric_labels = {} if isinstance(m, str) else dict(m.get("labels", {}))
        extras = _All()
        known = None  # label names are only known when samples arrive
    else:
        extras = frozenset({"node", "value"})
    fields = struct_fields(r.kind) if src == "event" else None
    scope = Scope(macros, macro_paths, extras, fields or None)  # unknown (future) kinds: unchecked
    r.for_ = _dur(spec, "for", path, doc)
    r.keep_firing_for = _dur(spec, "keep_firing_for", path, doc)
    r.throttle = _dur(spec, "throttle", path, doc)
    try:
        if src == "event":
            ev, ep = spec["event"], (*path, "event")
            if "where" in ev:
                r.where = compile_condition(ev["where"], scope, (*ep, "where"))
            r.excepts = [compile_condition(c, scope, (*ep, "except", i))
                         for i, c in enumerate(ev.get("except", []))]
            r.extract = [(compile_path(f, extras), compile_regex(p, (*ep, "extract", f)))
                         for f, p in ev.get("extract", {}).items()]
        if src == "absent":
            r.absent_for = _dur(spec["absent"], "for", (*path, "absent"), doc)
            known = {"node", "rule", "severity", "value", "last_seen", "silent_for", "count"}
        if src == "query":
            q, qp = spec["query"], (*path, "query")
            r.sql = q["sql"]
            r.every = _dur(q, "every", qp, doc, 60.0)
            r.timeout = _dur(q, "timeout", qp, doc, 2.0)
            cols = check_query(r.sql, (*qp, "sql"))
            known = None if cols is None else {*cols, "rule", "severity", "count", "first_seen", "last_seen"}
        if "aggregate" in spec:
            a, ap = spec["aggregate"], (*path, "aggregate")
            if src not in ("event", "metric"):
                raise CompileError("aggregate works on event and metric rules only", ap)
            r.agg_fn = a["fn"]
            r.window = _dur(a, "window", ap, doc)
            if r.window <= 0:
                raise CompileError("window must be positive", (*ap, "window"))
            fld = a.get("field", "value" if src == "metric" else None)
            if r.agg_fn not in ("count", "rate"):
                if fld is None:
                    raise CompileError(f"{r.agg_fn} needs a field to aggregate", ap)
                r.agg_field = compile_path(fld, extras)
            if r.agg_fn == "predict":
                r.horizon = _dur(a, "horizon", ap, doc)
                if r.horizon <= 0:
                    raise CompileError("predict needs a positive horizon", ap)
        if "when" in spec:
            r.when = compile_condition(spec["when"], scope, (*path, "when"))
        group = spec.get("group_by", ["node"])
        allowed = None
        if src == "event" and fields:
            allowed = fields | extras
        elif src == "absent":
            allowed = frozenset({"node"})
        elif src == "query" and known is not None:
            allowed = frozenset(known)
        for i, g in enumerate(group):
            if allowed is not None and g.split(".", 1)[0] not in allowed:
                raise CompileError(f"cannot group by {g!r}: no such field (available: {', '.join(sorted(allowed))})",
                                   (*path, "group_by", i))
        r.group_by = [(g, compile_path(g, extras)) for g in group]
        if known is not None:
            known |= set(group)
            if src == "metric":
                known |= {"name", "labels"}
        kn = None if known is None else frozenset(known)
        r.labels = {k: Template(v, kn, (*path, "labels", k)) for k, v in spec.get("labels", {}).items()}
        r.annotations = {k: Template(v, kn, (*path, "annotations", k))
                         for k, v in spec.get("annotations", {}).items()}
        r.propose = [(p["playbook"],
                      {k: Template(v, kn, (*path, "propose", i, "params", k))
                       for k, v in p.get("params", {}).items()},
                      bool(p.get("auto", False)))
                     for i, p in enumerate(spec.get("propose", []))]
        r.propose_if = [p.get("if_output") for p in spec.get("propose", [])]
        for i, pat in enumerate(r.propose_if):
            if pat is not None:
                compile_regex(pat, (*path, "propose", i, "if_output"))
        r.inhibited_by = [(i["rule"], list(i.get("equal", ["node"]))) for i in spec.get("inhibited_by", [])]
    except CompileError as e:
        raise doc.error(e.path, str(e)) from None
    return r


# --- files ----------------------------------------------------------------------------


def load_text(text: str, file: str) -> list[Rule]:
    """The rules of one file; the first error is raised (see ``check_text`` for all of them)."""
    rules, errors = check_text(text, file)
    if errors:
        raise errors[0]
    return rules


def _schema_error(doc: Doc, e: jsonschema.ValidationError) -> RuleError:
    path = tuple(e.absolute_path)
    msg = e.message
    if e.validator == "additionalProperties":
        extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
        if extra:
            path = (*path, extra[0])
            msg = f"unknown key {extra[0]!r} (allowed: {', '.join(sorted(e.schema['properties']))})"
    return doc.error(path, msg)


def check_text(text: str, file: str, books: dict | None = None) -> tuple[list[Rule], list[RuleError]]:
    """Every error of one file, in line order, not only the first: each rule is checked on
    its own. With ``books`` (playbook name -> header), candidates must name an installed
    playbook and only parameters it declares. The rules are only good if no error came."""
    try:
        doc = Doc(file, text)
    except RuleError as e:
        return [], [e]
    data = doc.data
    if data is None:
        return [], []
    if not isinstance(data, dict):
        return [], [doc.error((), f"a rule file is a mapping with a 'rules' list, got {type(data).__name__}")]
    errors: list[RuleError] = []
    broken: set[int] = set()  # rules whose shape is wrong: compiling them would only add noise
    for err in jsonschema.Draft202012Validator(schema()).iter_errors(data):
        errors.append(_schema_error(doc, err))
        p = tuple(err.absolute_path)
        if len(p) >= 2 and p[0] == "rules" and isinstance(p[1], int):
            broken.add(p[1])
        else:
            broken.add(-1)
    if -1 in broken:
        return [], _sorted(errors)
    macros = data.get("macros", {})
    macro_paths = {k: ("macros", k) for k in macros}
    rules, names = [], set()
    for i, spec in enumerate(data["rules"]):
        if i in broken:
            continue
        if spec["name"] in names:
            errors.append(doc.error(("rules", i, "name"), f"duplicate rule name {spec['name']!r}"))
            continue
        names.add(spec["name"])
        if not spec.get("enabled", True):
            continue
        try:
            rules.append(compile_rule(spec, ("rules", i), doc, macros, macro_paths))
        except RuleError as e:
            errors.append(e)
            continue
        if books is not None:
            errors += _check_candidates(doc, ("rules", i), spec, books)
    return rules, _sorted(errors)


def _sorted(errors: list[RuleError]) -> list[RuleError]:
    return sorted(errors, key=lambda e: e.line or 0)


def _check_candidates(doc: Doc, path: tuple, spec: dict, books: dict) -> list[RuleError]:
    """Each candidate names an installed playbook, and only parameters that playbook declares
    (in ``params`` or as a named group of ``if_output``): a typo would only surface when the
    alert fires, as a refused candidate and nothing to approve."""
    out = []
    for i, cand in enumerate(spec.get("propose", [])):
        at = (*path, "propose", i)
        pb = books.get(cand["playbook"])
        if pb is None:
            out.append(doc.error((*at, "playbook"), f"no such playbook {cand['playbook']!r}"
                                 f" (installed: {', '.join(sorted(books)) or 'none'})"))
            continue
        declared = set(pb.params)
        for k in cand.get("params", {}):
            if k not in declared:
                out.append(doc.error((*at, "params", k), f"playbook {pb.name!r} has no parameter {k!r}"
                                     f" (it declares: {', '.join(sorted(declared)) or 'none'})"))
        if cand.get("if_output"):
            for g in compile_regex(cand["if_output"], ()).groupindex:
                if g not in declared:
                    out.append(doc.error((*at, "if_output"), f"group {g!r} is not a parameter of {pb.name!r}"
                                         f" (it declares: {', '.join(sorted(declared)) or 'none'})"))
    return out


def load_file(path: Path) -> list[Rule]:
    rules, errors = check_file(path)
    if errors:
        raise errors[0]
    return rules


def check_file(path: Path, books: dict | None = None) -> tuple[list[Rule], list[RuleError]]:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        return [], [RuleError(str(path), None, "", f"cannot read: {e}")]
    return check_text(text, str(path), books)


def rule_files(path: Path) -> list[Path]:
    """A file, or the *.yaml / *.yml directly in a directory (its tests/ folder is not rules)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise RuleError(str(path), None, "", "no such file or directory")
    return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_paths(paths: list[Path], books: dict | None = None) -> tuple[list[Rule], list[RuleError]]:
    """Load every rule file; a bad file is reported (every error in it) and skipped, never
    stops the others. ``books``: see ``check_text``."""
    rules: list[Rule] = []
    errors: list[RuleError] = []
    by_name: dict[str, Rule] = {}
    for base in paths:
        try:
            files = rule_files(base)
        except RuleError as e:
            errors.append(e)
            continue
        for f in files:
            loaded, errs = check_file(f, books)
            if errs:
                errors += errs
                continue
            clash = next((r for r in loaded if r.name in by_name), None)
            if clash:
                first = by_name[clash.name]
                errors.append(RuleError(clash.file, clash.line, "name",
                                        f"rule {clash.name!r} is already defined at {first.file}:{first.line}"))
                continue
            for r in loaded:
                by_name[r.name] = r
            rules.extend(loaded)
    good = []
    for r in rules:
        bad = [n for n, _ in r.inhibited_by if n not in by_name]
        if bad:
            errors.append(RuleError(r.file, r.line, "inhibited_by", f"unknown rule {bad[0]!r}"))
            continue
        good.append(r)
    return good, errors
