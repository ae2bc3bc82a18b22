"""Playbook headers: parse, validate parameters, describe them as JSON Schema.

A playbook is a bash script whose YAML header sits in a comment block right after the
shebang, between ``# ---`` and ``# ---``::

    #!/usr/bin/env bash
    # ---
    # name: restart-unit
    # description: Restart a systemd unit and show its state.
    # risk: change
    # timeout: 60
    # params:
    #   unit: {type: unit, required: true, description: The unit to restart.}
    # verify: systemctl is-active --quiet -- "$PARAM_UNIT"
    # ---

The hub and every agent parse headers with this module: the agent checks parameters against
its OWN installed copy, so a hub cannot widen what a node accepts. Parameters reach scripts
only as environment variables (``PARAM_<NAME>``), never spliced into a command line, and
every value is validated here first: unknown names, control characters, over-long values and
values that do not match the declared type, anchored pattern or enum are refused with a
message naming the parameter and the rule it broke.

This module must not import anything from ``hub``.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RISKS = ("read-only", "change", "destructive")
TYPES = ("string", "int", "duration", "path", "ipaddr", "cidr", "unit", "enum")
HEADER_KEYS = ("name", "description", "risk", "timeout", "params", "check", "verify", "rollback")
PARAM_KEYS = ("type", "pattern", "enum", "max_length", "required", "default", "description", "min", "max")

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
PARAM_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# A string parameter with no pattern of its own still may not carry shell metacharacters.
SAFE_STRING = r"[A-Za-z0-9 _.,:@%+=/-]*"
SAFE_PATH = r"/[A-Za-z0-9_.,:@%+=/-]*"
UNIT_RE = re.compile(
    r"^[A-Za-z0-9_][A-Za-z0-9:_.@\\-]{0,250}"
    r"\.(service|socket|timer|mount|automount|target|path|slice|scope|swap|device)$"
)
_DURATION_RE = re.compile(r"^(\d{1,9})(s|m|h|d|w)?$")
IP_CHARS = re.compile(r"^[0-9A-Fa-f.:/]{2,49}$")  # no IPv6 scope ids (see _convert)
_DURATION_UNIT = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_TIMEOUT = 6 * 3600
DEFAULT_MAX_LENGTH = 256
HARD_MAX_LENGTH = 4096
MAX_FILE_BYTES = 1024 * 1024


class PlaybookError(ValueError):
    """A header that cannot be accepted. The message names file, line and key."""

    def __init__(self, path: Path | str, line: int | None, key: str | None, message: str):
        self.path, self.line, self.key = str(path), line, key
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


@dataclass(frozen=True)
class ParamSpec:
    type: str = "string"
    pattern: str | None = None
    enum: tuple[str, ...] | None = None
    max_length: int = DEFAULT_MAX_LENGTH
    required: bool = False
    default: str | None = None
    description: str = ""
    min: int | None = None  # int and duration (seconds)
    max: int | None = None


@dataclass(frozen=True)
class Playbook:
    name: str
    description: str
    risk: str
    timeout: int
    params: dict[str, ParamSpec] = field(default_factory=dict)
    check: str | None = None
    verify: str | None = None
    rollback: str | None = None
    path: str = ""
    sha256: str = ""

    @property
    def text(self) -> str:
        return Path(self.path).read_text()


def risk_rank(risk: str) -> int:
    return RISKS.index(risk)


# --- parsing ----------------------------------------------------------------------------


def _header(text: str, path: Path) -> tuple[str, int]:
    """Return the header YAML and the file line number of its first line."""
    lines = text.splitlines()
    i = 1 if lines and lines[0].startswith("#!") else 0
    while i < len(lines) and lines[i].strip() in ("", "#"):
        i += 1
    if i >= len(lines) or lines[i].strip() != "# ---":
        raise PlaybookError(path, i + 1, None, "no header: expected '# ---' after the shebang")
    body: list[str] = []
    start = i + 2
    for j in range(i + 1, len(lines)):
        line = lines[j]
        if line.strip() == "# ---":
            return "\n".join(body), start
        if not (line.startswith("# ") or line.rstrip() == "#"):
            raise PlaybookError(path, j + 1, None, "header lines must start with '# ' until the closing '# ---'")
        body.append(line[2:])
    raise PlaybookError(path, i + 1, None, "header is not closed with '# ---'")


def _key_lines(node: Any, offset: int) -> dict[str, int]:
    """Map 'key' and 'params.NAME.key' to file lines, from the YAML node tree."""
    import yaml

    out: dict[str, int] = {}
    if not isinstance(node, yaml.MappingNode):
        return out
    for k, v in node.value:
        key = str(k.value)
        out[key] = k.start_mark.line + offset
        if key == "params" and isinstance(v, yaml.MappingNode):
            for pk, pv in v.value:
                out[f"params.{pk.value}"] = pk.start_mark.line + offset
                if isinstance(pv, yaml.MappingNode):
                    for fk, _fv in pv.value:
                        out[f"params.{pk.value}.{fk.value}"] = fk.start_mark.line + offset
    return out


def parse(text: str, path: Path | str = "<playbook>", sha256: str = "") -> Playbook:
    # yaml is imported here, not with the module: the agent parses a playbook only when a job
    # arrives, and PyYAML's modules are ~0.4 MB of its memory the rest of the time
    import yaml

    path = Path(path)
    header, offset = _header(text, path)
    try:
        node = yaml.compose(header, Loader=yaml.SafeLoader)
        data = yaml.safe_load(header)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + offset if mark else offset
        raise PlaybookError(path, line, None, f"invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise PlaybookError(path, offset, None, "header must be a YAML mapping")
    lines = _key_lines(node, offset)

    def err(key: str, msg: str) -> PlaybookError:
        return PlaybookError(path, lines.get(key, offset), key, msg)

    for key in data:
        if key not in HEADER_KEYS:
            raise err(str(key), f"unknown key (known: {', '.join(HEADER_KEYS)})")
    for key in ("name", "description", "risk", "timeout"):
        if key not in data:
            raise PlaybookError(path, offset, key, "required key is missing")
    name = data["name"]
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise err("name", f"{name!r} is not a playbook name (lowercase letters, digits and '-')")
    if path.suffix == ".sh" and path.stem != name:
        raise err("name", f"{name!r} must match the file name {path.name!r}")
    if not isinstance(data["description"], str) or not data["description"].strip():
        raise err("description", "must be a non-empty string")
    if data["risk"] not in RISKS:
        raise err("risk", f"{data['risk']!r} is not one of {', '.join(RISKS)}")
    timeout = data["timeout"]
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= MAX_TIMEOUT:
        raise err("timeout", f"must be whole seconds between 1 and {MAX_TIMEOUT}, got {timeout!r}")
    steps = {}
    for key in ("check", "verify", "rollback"):
        v = data.get(key)
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise err(key, "must be a shell snippet (a non-empty string)")
        steps[key] = v
    raw_params = data.get("params") or {}
    if not isinstance(raw_params, dict):
        raise err("params", "must be a mapping of parameter name to its spec")
    params = {}
    for pname, spec in raw_params.items():
        params[str(pname)] = _param(str(pname), spec, lambda k, m, p=pname: err(f"params.{p}{'.' + k if k else ''}", m))
    return Playbook(
        name=name, description=data["description"].strip(), risk=data["risk"], timeout=timeout,
        params=params, path=str(path), sha256=sha256, **steps,
    )


def _param(name: str, spec: Any, err) -> ParamSpec:
    if not PARAM_NAME_RE.match(name):
        raise err("", "parameter names are lowercase letters, digits and '_' (it becomes PARAM_" + name.upper() + ")")
    if not isinstance(spec, dict):
        raise err("", "must be a mapping with at least 'type'")
    for k in spec:
        if k not in PARAM_KEYS:
            raise err(str(k), f"unknown key (known: {', '.join(PARAM_KEYS)})")
    ptype = spec.get("type", "string")
    if ptype not in TYPES:
        raise err("type", f"{ptype!r} is not one of {', '.join(TYPES)}")
    pattern = spec.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise err("pattern", "must be a string (a regular expression)")
        try:
            re.compile(pattern)
        except re.error as e:
            raise err("pattern", f"bad regular expression: {e}") from None
    enum = spec.get("enum")
    if enum is not None:
        if not isinstance(enum, list) or not enum or not all(isinstance(x, str | int) and not isinstance(x, bool) for x in enum):
            raise err("enum", "must be a non-empty list of strings")
        enum = tuple(str(x) for x in enum)
        if any(_CONTROL.search(x) for x in enum):
            raise err("enum", "values may not contain control characters")
    if ptype == "enum" and enum is None:
        raise err("enum", "type enum needs an 'enum' list")
    max_length = spec.get("max_length", DEFAULT_MAX_LENGTH)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 1 <= max_length <= HARD_MAX_LENGTH:
        raise err("max_length", f"must be an integer between 1 and {HARD_MAX_LENGTH}")
    required = spec.get("required", False)
    if not isinstance(required, bool):
        raise err("required", "must be true or false")
    bounds = {}
    for k in ("min", "max"):
        v = spec.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise err(k, "must be an integer")
        if v is not None and ptype not in ("int", "duration"):
            raise err(k, "only int and duration parameters have bounds")
        bounds[k] = v
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise err("description", "must be a string")
    p = ParamSpec(type=ptype, pattern=pattern, enum=enum, max_length=max_length, required=required,
                  default=None, description=description.strip(), **bounds)
    default = spec.get("default")
    if default is not None:
        try:
            default = check_value(name, p, default)
        except ValueError as e:
            raise err("default", str(e)) from None
        p = ParamSpec(**{**p.__dict__, "default": default})
    return p


def load(path: Path | str) -> Playbook:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise PlaybookError(path, None, None, f"larger than {MAX_FILE_BYTES} bytes: not a playbook")
        data = path.read_bytes()
    except OSError as e:
        raise PlaybookError(path, None, None, f"cannot read: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PlaybookError(path, None, None, "not UTF-8 text") from None
    import hashlib  # not at import: the agent decides first whether hashlib may load OpenSSL

    return parse(text, path, hashlib.sha256(data).hexdigest())


def load_dir(path: Path | str, errors: list[PlaybookError] | None = None) -> dict[str, Playbook]:
    """Every ``*.sh`` in a directory. With ``errors`` given, bad files are collected there and
    skipped (one bad playbook never hides the good ones); without it the first one raises."""
    out: dict[str, Playbook] = {}
    d = Path(path)
    if not d.is_dir():
        e = PlaybookError(d, None, None, "not a directory")
        if errors is None:
            raise e
        errors.append(e)
        return out
    for f in sorted(d.glob("*.sh")):
        try:
            pb = load(f)
            if pb.name in out:
                raise PlaybookError(f, None, "name", f"{pb.name!r} is also defined in {out[pb.name].path}")
        except PlaybookError as e:
            if errors is None:
                raise
            errors.append(e)
            continue
        out[pb.name] = pb
    return out


# --- parameters -------------------------------------------------------------------------


def check_value(name: str, spec: ParamSpec, value: Any) -> str:
    """One value -> its normalised string, or ValueError naming the parameter and the rule."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"parameter {name!r}: must be a string or an integer, got {type(value).__name__}")
    v = str(value)
    if "\x00" in v:
        raise ValueError(f"parameter {name!r}: contains a NUL byte")
    if "\n" in v or "\r" in v:
        raise ValueError(f"parameter {name!r}: contains a newline")
    if _CONTROL.search(v):
        raise ValueError(f"parameter {name!r}: contains a control character")
    if len(v) > spec.max_length:
        raise ValueError(f"parameter {name!r}: {len(v)} characters; the limit is {spec.max_length}")
    if v == "" and spec.required:
        raise ValueError(f"parameter {name!r}: is required and may not be empty")
    v = _typed(name, spec, v)
    if spec.enum is not None and v not in spec.enum:
        raise ValueError(f"parameter {name!r}: {v!r} is not one of {', '.join(spec.enum)}")
    if spec.pattern is not None and not re.fullmatch(spec.pattern, v):
        raise ValueError(f"parameter {name!r}: {v!r} does not match the pattern {spec.pattern}")
    if spec.type == "string" and spec.pattern is None and spec.enum is None and not re.fullmatch(SAFE_STRING, v):
        raise ValueError(f"parameter {name!r}: only letters, digits, spaces and _ . , : @ % + = / - are allowed")
    # paths always: a pattern such as ^/tmp(/.*)?$ narrows where, this narrows what
    if spec.type == "path" and not re.fullmatch(SAFE_PATH, v):
        raise ValueError(f"parameter {name!r}: only letters, digits and _ . , : @ % + = / - are allowed in paths")
    return v


def _typed(name: str, spec: ParamSpec, v: str) -> str:
    t = spec.type
    if t == "int":
        if not re.fullmatch(r"-?\d{1,18}", v):
            raise ValueError(f"parameter {name!r}: {v!r} is not an integer")
        _bounds(name, spec, int(v))
        return str(int(v))
    if t == "duration":
        m = _DURATION_RE.match(v)
        if not m:
            raise ValueError(f"parameter {name!r}: {v!r} is not a duration such as 90, 30s, 15m, 2h or 7d")
        secs = int(m.group(1)) * _DURATION_UNIT[m.group(2)]
        _bounds(name, spec, secs)
        return str(secs)
    if t == "path":
        if not v.startswith("/"):
            raise ValueError(f"parameter {name!r}: {v!r} is not an absolute path")
        if ".." in v.split("/"):
            raise ValueError(f"parameter {name!r}: {v!r} contains '..'")
        norm = posixpath.normpath(v)
        if norm.startswith("//"):
            norm = "/" + norm.lstrip("/")
        return norm
    if t in ("ipaddr", "cidr") and not IP_CHARS.match(v):
        # ipaddress accepts IPv6 scope ids ("fe80::1%anything"): shell and nft syntax could ride in one
        raise ValueError(f"parameter {name!r}: {v!r} may only hold hex digits, '.', ':' and '/'")
    if t == "ipaddr":
        try:
            return str(ipaddress.ip_address(v))
        except ValueError:
            raise ValueError(f"parameter {name!r}: {v!r} is not an IP address") from None
    if t == "cidr":
        try:
            return str(ipaddress.ip_network(v, strict=False))
        except ValueError:
            raise ValueError(f"parameter {name!r}: {v!r} is not an IP address or network (CIDR)") from None
    if t == "unit":
        if "." not in v:
            v += ".service"
        if not UNIT_RE.match(v):
            raise ValueError(f"parameter {name!r}: {v!r} is not a systemd unit name")
        return v
    return v  # string, enum: checked by the caller


def _bounds(name: str, spec: ParamSpec, n: int) -> None:
    if spec.min is not None and n < spec.min:
        raise ValueError(f"parameter {name!r}: {n} is below the minimum {spec.min}")
    if spec.max is not None and n > spec.max:
        raise ValueError(f"parameter {name!r}: {n} is above the maximum {spec.max}")


def validate_params(pb: Playbook, params: Any) -> dict[str, str]:
    """The parameters a run will get, normalised and with defaults filled in."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ValueError(f"{pb.name}: parameters must be a mapping, got {type(params).__name__}")
    for k in params:
        if k not in pb.params:
            known = ", ".join(pb.params) or "none"
            raise ValueError(f"{pb.name}: unknown parameter {str(k)[:64]!r} (known: {known})")
    out: dict[str, str] = {}
    for name, spec in pb.params.items():
        if name in params and params[name] is not None:
            out[name] = check_value(name, spec, params[name])
        elif spec.default is not None:
            out[name] = spec.default
        elif spec.required:
            raise ValueError(f"{pb.name}: parameter {name!r} is required")
    return out


def env_of(params: dict[str, str]) -> dict[str, str]:
    return {f"PARAM_{k.upper()}": v for k, v in params.items()}


def json_schema(pb: Playbook) -> dict:
    """JSON Schema for the parameters (for constrained generation). Passing it is necessary,
    not sufficient: validate_params still has the last word."""
    props: dict[str, dict] = {}
    for name, spec in pb.params.items():
        if spec.type == "int":
            s: dict[str, Any] = {"type": "integer"}
            if spec.min is not None:
                s["minimum"] = spec.min
            if spec.max is not None:
                s["maximum"] = spec.max
        else:
            s = {"type": "string", "maxLength": spec.max_length}
            if spec.enum is not None:
                s["enum"] = list(spec.enum)
            elif spec.pattern is not None:
                s["pattern"] = _anchored(spec.pattern)
            else:
                s["pattern"] = {
                    "string": f"^{SAFE_STRING}$",
                    "duration": r"^[0-9]{1,9}(s|m|h|d|w)?$",
                    "path": f"^{SAFE_PATH}$",
                    "ipaddr": r"^[0-9A-Fa-f:.]{2,45}$",
                    "cidr": r"^[0-9A-Fa-f:.]{2,45}(/[0-9]{1,3})?$",
                    "unit": r"^[A-Za-z0-9_][A-Za-z0-9:_.@-]*(\.[a-z]+)?$",
                }.get(spec.type, f"^{SAFE_STRING}$")
        if spec.description:
            s["description"] = spec.description
        if spec.default is not None:
            s["default"] = int(spec.default) if spec.type == "int" else spec.default
        props[name] = s
    return {
        "type": "object",
        "properties": props,
        "required": [n for n, s in pb.params.items() if s.required and s.default is None],
        "additionalProperties": False,
    }


def _anchored(p: str) -> str:
    return p if p.startswith("^") and p.endswith("$") else f"^(?:{p})$"
