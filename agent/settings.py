"""One settings loader, one precedence: flag > environment > file > default.

Both processes describe their settings as a tuple of ``Opt``; the same table drives the
loader, the error messages and the documentation (``docs/settings.md`` is checked
against it by a test). The config file is TOML; a wrong key or value is reported with
the file, the line and the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any


class SettingsError(ValueError):
    pass


def parse_bool(v: str | bool) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {v!r}")


_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(v: str | int | float) -> float:
    """'90', '90s', '5m', '2h', '1d' -> seconds."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    m = _DUR.match(str(v))
    if not m:
        raise ValueError(f"expected a duration such as 30s, 5m, 2h or 1d, got {v!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.I)


def parse_size(v: str | int) -> int:
    """'64MiB', '500k', '1g', '1048576' -> bytes (powers of 1024)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    m = _SIZE.match(str(v))
    if not m:
        raise ValueError(f"expected a size such as 64MiB or 500k, got {v!r}")
    unit = (m.group(2) or "b").lower()[0]
    return int(float(m.group(1)) * 1024 ** "bkmgt".index(unit))


def parse_list(v: str | list) -> list[str]:
    if isinstance(v, list):
        return [str(x) for x in v]
    return [p for p in str(v).split(os.pathsep) if p]


@dataclass(frozen=True)
class Opt:
    key: str  # attribute name and config-file key
    default: Any
    env: str
    help: str
    parse: Callable[[Any], Any] = str
    flag: str | None = None  # the CLI flag, for documentation

    def convert(self, value: Any, where: str) -> Any:
        try:
            return self.parse(value)
        except (TypeError, ValueError) as e:
            raise SettingsError(f"{where}: {self.key}: {e}") from None


class Settings:
    """Resolved settings: attribute access, plus where each value came from."""

    config_file: Path | None  # set by load_process: the file it read (or would have)

    def __init__(self, values: dict[str, Any], sources: dict[str, str]):
        self.__dict__.update(values)
        self._sources = sources

    def source(self, key: str) -> str:
        return self._sources[key]

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    if TYPE_CHECKING:  # the keys are the Opt tables' (agent/config.py, hub/config.py)

        def __getattr__(self, key: str) -> Any: ...


def _line_of(text: str, key: str) -> int | None:
    pat = re.compile(rf"^\s*{re.escape(key)}\s*=", re.M)
    m = pat.search(text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def read_file(path: Path, opts: tuple[Opt, ...]) -> dict[str, Any]:
    """Read a TOML config file; unknown keys are errors that name file and line."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise SettingsError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{path}: {e}") from None
    known = {o.key for o in opts}
    for key in data:
        if key not in known:
            line = _line_of(text, key)
            at = f"{path}:{line}" if line else str(path)
            raise SettingsError(f"{at}: unknown key {key!r} (known: {', '.join(sorted(known))})")
    out = {}
    for o in opts:
        if o.key in data:
            line = _line_of(text, o.key)
            out[o.key] = o.convert(data[o.key], f"{path}:{line}" if line else str(path))
    return out


def load(
    opts: tuple[Opt, ...],
    flags: Mapping[str, Any],
    config_file: Path | None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    env = os.environ if env is None else env
    from_file = read_file(config_file, opts) if config_file else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for o in opts:
        flag = flags.get(o.key)
        if flag is not None and flag != ():
            values[o.key], sources[o.key] = o.convert(flag, f"--{o.key.replace('_', '-')}"), "flag"
        elif o.env in env:
            values[o.key], sources[o.key] = o.convert(env[o.env], f"${o.env}"), "env"
        elif o.key in from_file:
            values[o.key], sources[o.key] = from_file[o.key], f"file {config_file}"
        else:
            values[o.key], sources[o.key] = o.default, "default"
    return Settings(values, sources)


def xdg(kind: str, fallback: str) -> Path:
    base = os.environ.get(f"XDG_{kind}_HOME")
    return Path(base) if base else Path.home() / fallback


def home_dir(flag: Path | str | None, env_var: str, default: Callable[[], Path]) -> Path:
    """A process's own directory (the agent's state, the hub's data): flag > environment > default.
    The default is computed only when needed: a service with no home (a unit whose user has
    no passwd entry) that names its directory must not fail on ``Path.home()``."""
    if flag:
        return Path(flag)
    env = os.environ.get(env_var)
    return Path(env) if env else default()


def load_process(opts: tuple[Opt, ...], flags: Mapping[str, Any], dir_key: str, dir_env: str,
                 default_dir: Callable[[], Path], config_env: str, config_name: str) -> Settings:
    """The one loader both programs use: their directory first (the config file lives there
    unless ``config_env`` points elsewhere), then every setting by the usual precedence."""
    home = home_dir(flags.get(dir_key), dir_env, default_dir)
    config_file = Path(os.environ.get(config_env, home / config_name))
    s = load(opts, {**flags, dir_key: home}, config_file)
    s.config_file = config_file
    return s
