"""Services collector: steps aside without systemd (this machine); parsing and change
detection on `systemctl` output written by hand in systemd's documented formats
(systemctl(1) `show`: one KEY=VALUE per line, units separated by an empty line)."""

from __future__ import annotations

import os
import stat
import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.collectors import services
from agent.collectors.services import (
    ServicesCollector,
    changes,
    parse_list_units,
    parse_show,
    unit_state,
)
from agent.config import AGENT_OPTS
from agent.settings import load
from agent.state import State

SHOW = textwrap.dedent("""\
    Id=nginx.service
    ActiveState=active
    SubState=running
    Result=success
    NRestarts=0
    UnitFileState=enabled

    Id=backup.service
    ActiveState=failed
    SubState=failed
    Result=exit-code
    NRestarts=3
    UnitFileState=static

    Id=weird=name.service
    ActiveState=inactive
    SubState=dead
    Result=success
    NRestarts=
    UnitFileState=

    Id=
    ActiveState=inactive
""")

LIST = textwrap.dedent("""\
    nginx.service                loaded    active   running Nginx web server
    ● backup.service             loaded    failed   failed  Nightly backup
    weird=name.service           not-found inactive dead    weird=name.service
""")


def settings(**kw):
    return load(AGENT_OPTS, kw, None, env={})


def test_steps_aside_where_systemd_is_not_init():
    reason = ServicesCollector.unavailable(settings())
    if os.path.isdir("/run/systemd/system"):
        assert reason is None or "systemctl" in reason
    else:  # this machine: a container without systemd as PID 1
        assert reason and "systemd is not the init system" in reason


def test_parse_show_and_list():
    units = parse_show(SHOW)
    assert [u.get("Id") for u in units] == ["nginx.service", "backup.service", "weird=name.service", ""]
    assert unit_state(units[1]) == ("failed", "failed", "exit-code", 3, "static")
    assert unit_state(units[2]) == ("inactive", "dead", "success", None, None)
    assert unit_state(units[3]) is None
    assert parse_list_units(LIST) == {"nginx.service": ("active", "running"), "backup.service": ("failed", "failed"),
                                      "weird=name.service": ("inactive", "dead")}
    assert parse_list_units("x.service loaded\n") == {"x.service": (None, None)}
    assert parse_show("") == [] and parse_list_units("") == {}


def test_changes_baseline_then_transitions():
    now = {u["Id"]: unit_state(u) for u in parse_show(SHOW) if unit_state(u)}
    first = changes({}, now, 1.0, baseline=True)
    assert [(e.unit, e.active, e.previous) for e in first] == [
        ("backup.service", "failed", None), ("nginx.service", "active", None), ("weird=name.service", "inactive", None)]
    last = {u: list(s) for u, s in now.items()}
    assert changes(last, now, 2.0, baseline=False) == []
    # nginx restarted by systemd (same state, more restarts); backup recovered; weird removed;
    # a new unit appeared
    later = dict(now)
    later["nginx.service"] = ("active", "running", "success", 1, "enabled")
    later["backup.service"] = ("active", "exited", "success", 3, "static")
    del later["weird=name.service"]
    later["new.service"] = ("activating", "start", "success", 0, "enabled")
    evs = {e.unit: e for e in changes(last, later, 3.0, baseline=False)}
    assert evs["nginx.service"].restarts == 1 and evs["nginx.service"].previous == "active"
    assert (evs["backup.service"].active, evs["backup.service"].previous) == ("active", "failed")
    assert evs["new.service"].previous == "inactive"
    assert "weird=name.service" not in evs  # it was inactive already: nothing to say
    del later["nginx.service"]
    gone = changes({u: list(s) for u, s in now.items()}, later, 4.0, baseline=False)
    assert any(e.unit == "nginx.service" and e.active == "inactive" and e.previous == "active" for e in gone)


@pytest.fixture
def fake_systemctl(tmp_path, monkeypatch):
    """A stand-in for systemctl (systemd does not run here), answering from the hand-written
    fixtures and recording its arguments, to test the subprocess plumbing. ``show`` prints
    the blocks of the units named after ``--``, as systemctl does. The booted-node lab runs
    the collector against the real one (tests/lab/test_services_lab.py)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "show.txt").write_text(SHOW)
    (tmp_path / "list.txt").write_text(LIST)
    script = bin_dir / "systemctl"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import os
        import sys
        argv = sys.argv[1:]
        with open("{tmp_path}/argv", "a") as f:
            f.write(" ".join(argv) + "\\n")
        if os.path.exists("{tmp_path}/busy"):
            sys.exit("Failed to list units: Connection timed out")
        if argv[0] == "list-units":
            print(open("{tmp_path}/list.txt").read(), end="")
        elif argv[0] == "show":
            want = argv[argv.index("--") + 1:]
            blocks = open("{tmp_path}/show.txt").read().split("\\n\\n")
            print("\\n\\n".join(b for b in blocks if b.split("\\n")[0][3:] in want))
        else:
            sys.exit(f"unexpected {{argv[0]}}")
    """))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tmp_path


async def test_poll_and_persisted_baseline(tmp_path, fake_systemctl, monkeypatch):
    monkeypatch.setattr(services, "UNITS_DIR", str(tmp_path / "absent"))
    events = []
    state = State(tmp_path / "state.db")
    c = ServicesCollector(settings(services_interval=5), lambda e: events.append(e) or True, state)
    now = await c.poll()
    assert now["backup.service"][:2] == ("failed", "failed")
    argv = (fake_systemctl / "argv").read_text().splitlines()
    assert argv[0].startswith("list-units --type=service --all")
    assert argv[1].split()[:3] == ["show", "--no-pager", "-p"] and argv[1].endswith("-- nginx.service backup.service weird=name.service")
    assert c.step(now) == 3
    # a new agent process (same state.db) does not report the baseline again
    c2 = ServicesCollector(settings(services_interval=5), lambda e: events.append(e) or True, state)
    assert c2.step(await c2.poll()) == 0
    # without systemd's invocation links nothing says what started: every poll shows every unit
    (fake_systemctl / "argv").write_text("")
    await c2.poll()
    assert [a for a in (fake_systemctl / "argv").read_text().splitlines() if a.startswith("show")] == [argv[1]]
    state.close()


def systemd_link(units, unit: str, invocation: str | None) -> None:
    """What systemd does at a start (a new symlink renamed into place) or a stop (unlink)."""
    link = units / f"invocation:{unit}"
    if invocation is None:
        link.unlink()
        return
    tmp = units / f".#invocation:{unit}tmp"
    tmp.symlink_to(invocation)
    tmp.rename(link)


async def test_shows_only_the_units_that_moved(tmp_path, fake_systemctl, monkeypatch):
    """After the first poll, `systemctl show` runs only for units whose listed state changed
    or that systemd started or stopped since (inotify on its invocation links): a restart
    between two polls, or a failed unit that ran again and failed another way, is still seen."""
    units = tmp_path / "units"
    units.mkdir()
    monkeypatch.setattr(services, "UNITS_DIR", str(units))
    systemd_link(units, "nginx.service", "a" * 32)
    state = State(tmp_path / "state.db")
    c = ServicesCollector(settings(services_interval=5), lambda e: True, state)
    argv = fake_systemctl / "argv"

    def shown() -> list[str]:
        lines = argv.read_text().splitlines()
        argv.write_text("")
        return [line.split(" -- ")[1] for line in lines if line.startswith("show")]

    first = await c.poll()
    assert shown() == ["nginx.service backup.service weird=name.service"]
    assert await c.poll() == first and shown() == []  # nothing moved: list-units only
    # nginx crashed and systemd restarted it between polls: same listed state, a new invocation
    systemd_link(units, "nginx.service", None)
    systemd_link(units, "nginx.service", "b" * 32)
    (fake_systemctl / "show.txt").write_text(SHOW.replace("NRestarts=0", "NRestarts=1"))
    now = await c.poll()
    assert shown() == ["nginx.service"] and now["nginx.service"][3] == 1
    assert now["backup.service"] == first["backup.service"]
    assert await c.poll() == now and shown() == []
    # backup (failed) ran again between polls and failed another way: failed at both polls,
    # its link came and went
    systemd_link(units, "backup.service", "c" * 32)
    systemd_link(units, "backup.service", None)
    (fake_systemctl / "show.txt").write_text(SHOW.replace("Result=exit-code", "Result=signal"))
    now = await c.poll()
    assert shown() == ["backup.service"] and now["backup.service"][:3] == ("failed", "failed", "signal")
    # backup recovered: its listed state moved
    (fake_systemctl / "list.txt").write_text(LIST.replace("failed   failed", "active   exited"))
    (fake_systemctl / "show.txt").write_text(SHOW.replace("ActiveState=failed\nSubState=failed",
                                                          "ActiveState=active\nSubState=exited"))
    now = await c.poll()
    assert shown() == ["backup.service"] and now["backup.service"][:2] == ("active", "exited")
    # the directory went away: every unit is shown again
    for link in units.iterdir():
        link.unlink()
    units.rmdir()
    shown()
    await c.poll()
    assert shown() == ["nginx.service backup.service weird=name.service"]
    c.starts.close()
    state.close()


async def test_skips_the_poll_while_nothing_moves(tmp_path, fake_systemctl, monkeypatch):
    """Once two polls agree and no unit is on its way anywhere, a poll with no start or stop
    under systemd's invocation links runs no systemctl at all; a start or stop, a unit in a
    transient state, or RESYNC seconds since the last full look bring the poll back."""
    units = tmp_path / "units"
    units.mkdir()
    monkeypatch.setattr(services, "UNITS_DIR", str(units))
    systemd_link(units, "nginx.service", "a" * 32)
    state = State(tmp_path / "state.db")
    events: list = []
    c = ServicesCollector(settings(services_interval=5), lambda e: events.append(e) or True, state)
    argv = fake_systemctl / "argv"

    def ran() -> list[str]:
        lines = argv.read_text().splitlines()
        argv.write_text("")
        return [line.split()[0] for line in lines]

    async def tick() -> None:  # one turn of run()'s loop
        if not c.quiet():
            c.step(await c.poll())

    await tick()
    assert ran() == ["list-units", "show"] and len(events) == 3
    await tick()  # the second poll agrees with the first: settled
    assert ran() == ["list-units"]
    written = state.db.total_changes
    for _ in range(3):
        await tick()
    assert ran() == [] and state.db.total_changes == written  # no child, no write
    # systemd restarted nginx (same listed state): the link says so; the unit is shown
    systemd_link(units, "nginx.service", None)
    systemd_link(units, "nginx.service", "b" * 32)
    (fake_systemctl / "show.txt").write_text(SHOW.replace("NRestarts=0", "NRestarts=1"))
    await tick()
    assert ran() == ["list-units", "show"] and events[-1].restarts == 1
    await tick()
    assert ran() == ["list-units"]  # settled again
    await tick()
    assert ran() == []
    # a start seen while systemctl fails: the failed poll is not skipped next time
    systemd_link(units, "nginx.service", "d" * 32)
    (fake_systemctl / "show.txt").write_text(SHOW.replace("NRestarts=0", "NRestarts=2"))
    (fake_systemctl / "busy").write_text("")
    with pytest.raises(RuntimeError):
        await tick()
    assert ran() == ["list-units"]
    (fake_systemctl / "busy").unlink()
    await tick()
    assert ran() == ["list-units", "show"] and events[-1].restarts == 2
    await tick()
    assert ran() == ["list-units"]
    await tick()
    assert ran() == []
    # a unit in a transient state keeps the polls coming until it arrives
    systemd_link(units, "backup.service", "c" * 32)
    (fake_systemctl / "list.txt").write_text(LIST.replace("failed   failed", "activating start"))
    (fake_systemctl / "show.txt").write_text(SHOW.replace("ActiveState=failed\nSubState=failed",
                                                          "ActiveState=activating\nSubState=start"))
    await tick()
    assert ran() == ["list-units", "show"] and events[-1].active == "activating"
    await tick()
    assert ran() == ["list-units"]  # same as before, but activating: not settled
    (fake_systemctl / "list.txt").write_text(LIST.replace("failed   failed", "active   exited"))
    (fake_systemctl / "show.txt").write_text(SHOW.replace("ActiveState=failed\nSubState=failed",
                                                          "ActiveState=active\nSubState=exited"))
    await tick()
    assert ran() == ["list-units", "show"] and (events[-1].unit, events[-1].active) == ("backup.service", "active")
    await tick()
    assert ran() == ["list-units"]
    await tick()
    assert ran() == []
    # what no start or stop announces is seen at the next full look
    (fake_systemctl / "list.txt").write_text(LIST.replace("failed   failed", "active   exited")
                                             .replace("active   running", "active   exited"))
    (fake_systemctl / "show.txt").write_text(SHOW.replace("ActiveState=failed\nSubState=failed",
                                                          "ActiveState=active\nSubState=exited")
                                             .replace("NRestarts=0", "NRestarts=1")
                                             .replace("SubState=running", "SubState=exited"))
    n = len(events)
    await tick()
    assert ran() == [] and len(events) == n
    c.listed_at -= services.RESYNC
    await tick()
    assert ran() == ["list-units", "show"]
    assert [(e.unit, e.sub, e.restarts) for e in events[n:]] == [("nginx.service", "exited", 1)]
    c.starts.close()
    state.close()


def test_interval_validated(tmp_path):
    state = State(tmp_path / "s.db")
    with pytest.raises(ValueError, match="services_interval"):
        ServicesCollector(settings(services_interval=0), lambda e: True, state)
    state.close()


_val = st.text(alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=40).map(str.strip)


@given(st.lists(st.fixed_dictionaries({"Id": _val.filter(bool), "ActiveState": _val, "NRestarts": st.integers(0, 10**6).map(str)}), max_size=8))
def test_show_round_trip(units):
    text = "\n\n".join("\n".join(f"{k}={v}" for k, v in u.items()) for u in units)
    assert parse_show(text) == units


@given(st.text(max_size=500))
def test_parsers_never_raise(text):
    for u in parse_show(text):
        unit_state(u)
    parse_list_units(text)
