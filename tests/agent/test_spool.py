"""The agent's durable spool: numbering, shedding with a counted marker, renumbering."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from agent import wire
from agent.spool import Spool


def log(i: int, size: int = 10) -> bytes:
    return wire.encode_event(wire.Log(ts=float(i), source="t", message=f"{i}:" + "x" * size))


def test_numbers_survive_reopen_and_ack(tmp_path):
    sp = Spool(tmp_path / "s.db", 10_000_000)
    assert sp.append([log(1), log(2), log(3)]) == 3
    sp.ack(3)
    sp.close()
    sp = Spool(tmp_path / "s.db", 10_000_000)  # empty spool: numbering must not restart
    assert sp.append([log(4)]) == 4
    assert [s for s, _ in sp.read(10, 10_000)] == [4]


def test_kill9_during_appends_loses_no_committed_event(tmp_path):
    """A child appends and reports each committed seq; we kill -9 it mid-stream."""
    code = textwrap.dedent(f"""
        import sys
        from agent import wire
        from agent.spool import Spool
        sp = Spool({str(tmp_path / 's.db')!r}, 10**9)
        for i in range(100000):
            last = sp.append([wire.encode_event(wire.Log(ts=1.0, source='t', message=str(i)))])
            print(last, flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    seen = 0
    for line in p.stdout:
        seen = int(line)
        if seen >= 300:
            break
    p.kill()
    p.wait()
    p.stdout.close()
    sp = Spool(tmp_path / "s.db", 10**9)
    rows = sp.read(100_000, 10**9)
    seqs = [s for s, _ in rows]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= seen
    assert [wire.decode_event(b).message for _, b in rows] == [str(i) for i in range(len(seqs))]


def test_kill9_leaves_the_position_of_exactly_the_last_event_stored(tmp_path):
    """Each append stores events and the position they were read up to in one transaction:
    after a kill -9 at any point, the position names the last event in the spool."""
    code = textwrap.dedent(f"""
        from agent import wire
        from agent.spool import Spool
        sp = Spool({str(tmp_path / 's.db')!r}, 10**9)
        for i in range(100000):
            blobs = [wire.encode_event(wire.Log(ts=1.0, source='t', message=str(3 * i + k))) for k in range(3)]
            last = sp.append(blobs, {{"journald": str(3 * i + 2)}})
            print(last, flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    for line in p.stdout:
        if int(line) >= 600:
            break
    p.kill()
    p.wait()
    p.stdout.close()
    sp = Spool(tmp_path / "s.db", 10**9)
    rows = sp.read(100_000, 10**9)
    assert len(rows) >= 600
    assert sp.positions() == {"journald": wire.decode_event(rows[-1][1]).message}
    assert sp.append([], {"journald": "later"}) == len(rows)  # a position alone takes no number
    sp.close()
    sp = Spool(tmp_path / "s.db", 10**9)
    assert sp.positions() == {"journald": "later"}
    sp.close()


def test_shedding_replaces_oldest_with_one_counted_marker(tmp_path):
    sp = Spool(tmp_path / "s.db", max_bytes=2000)
    for i in range(1, 101):
        sp.append([log(i, 50)])
    assert sp.bytes <= 2000
    rows = sp.read(1000, 10**9)
    seqs = [s for s, _ in rows]
    assert seqs == sorted(seqs) and seqs[-1] == 100
    first = wire.decode_event(rows[0][1])
    assert isinstance(first, wire.Dropped) and first.first_seq == 1
    kept = len(rows) - 1
    # every number is either delivered or counted in the marker, never both, never neither
    assert first.count + kept == 100 - 0 and rows[1][0] == rows[0][0] + 1
    assert sp.shed_total >= first.count


def test_inflight_rows_are_never_shed(tmp_path):
    sp = Spool(tmp_path / "s.db", max_bytes=1500)
    sp.append([log(i, 50) for i in range(1, 6)])
    sp.inflight_hi = 5
    for i in range(6, 60):
        sp.append([log(i, 50)])
    seqs = [s for s, _ in sp.read(1000, 10**9)]
    assert seqs[:5] == [1, 2, 3, 4, 5]
    marker = wire.decode_event(sp.read(1000, 10**9)[5][1])
    assert isinstance(marker, wire.Dropped) and marker.first_seq == 6


def test_skip_to_renumbers_a_reset_spool(tmp_path):
    sp = Spool(tmp_path / "s.db", 10**9)
    sp.append([log(1), log(2)])
    assert sp.skip_to(1) == 0  # the hub is behind us: nothing to do
    assert sp.skip_to(500) == 500  # the hub has seen 1..500 from an earlier incarnation
    assert [s for s, _ in sp.read(10, 10**9)] == [501, 502]
    assert sp.append([log(3)]) == 503
    assert os.path.exists(tmp_path / "s.db")


def test_acked_events_are_kept_and_given_back_to_a_restored_hub(tmp_path):
    sp = Spool(tmp_path / "s.db", 10**9, keep_acked=3600)
    sp.append([log(i) for i in range(1, 11)])
    sp.ack(10)
    assert sp.read(100, 10**9) == [] and len(sp) == 0 and sp.oldest() is None
    sp.close()
    sp = Spool(tmp_path / "s.db", 10**9, keep_acked=3600)  # survives a restart
    assert sp.acked_hi == 10 and sp.read(100, 10**9) == []
    assert sp.unack_after(6) == 7  # the hub came back from a backup holding 1..6
    assert [s for s, _ in sp.read(100, 10**9)] == [7, 8, 9, 10]
    sp.ack(10)
    assert sp.read(100, 10**9) == []


def test_acked_events_expire_and_go_first_when_space_is_short(tmp_path):
    sp = Spool(tmp_path / "s.db", 10**9, keep_acked=0)
    sp.append([log(i) for i in range(1, 6)])
    sp.ack(5)
    assert sp.db.execute("SELECT count(*) FROM spool").fetchone()[0] == 0  # nothing kept
    size = len(log(10, 50))
    bound = 45 * size  # room for 40 events (shedding aims at 90%): not for 30 acked + 30 new
    sp = Spool(tmp_path / "t.db", max_bytes=bound, keep_acked=3600)
    sp.append([log(i, 50) for i in range(10, 40)])
    sp.ack(30)
    sp.append([log(i, 50) for i in range(40, 70)])
    pending = [s for s, _ in sp.read(1000, 10**9)]
    assert pending == list(range(31, 61))  # room was made from acked events, none pending shed
    assert sp.bytes <= bound and sp.shed_total == 0
    assert sp.unack_after(0) > 1  # what was shed cannot be given back; the rest can


def test_a_gap_the_spool_cannot_fill_gets_a_marker(tmp_path):
    sp = Spool(tmp_path / "s.db", 10**9, keep_acked=0)
    sp.append([log(i) for i in range(1, 11)])
    sp.ack(8)  # 1..8 gone for good (keep_acked=0)
    assert sp.unack_after(3) == 9  # cannot give back 4..8
    sp.put_at(8, wire.encode_event(wire.Dropped(ts=1.0, first_seq=4, count=5, reason="t")))
    rows = sp.read(100, 10**9)
    assert [s for s, _ in rows] == [8, 9, 10]
    assert isinstance(wire.decode_event(rows[0][1]), wire.Dropped)


def test_expiry_walks_only_what_is_due(tmp_path, monkeypatch):
    """Acked events kept for a restore expire from the bottom, in chunks; an ack with
    nothing due reads a row or two, not the whole day kept (the agent acks every few seconds)."""
    sp = Spool(tmp_path / "s.db", 10**9, keep_acked=3600)
    clock = [1000.0]
    monkeypatch.setattr("agent.spool.time.time", lambda: clock[0])
    sp.append([log(i) for i in range(1, 1201)])
    sp.ack(1200)  # all 1,200 kept, acked at t=1000
    sp.append([log(i) for i in range(1201, 1211)])
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    sp.db.set_progress_handler(count, 1)
    clock[0] = 2000.0
    sp.ack(1205)
    sp.db.set_progress_handler(None, 1)
    assert steps[0] < 500, f"an ack with nothing due ran {steps[0]} SQLite VM steps"  # a scan: >10,000
    assert sp.db.execute("SELECT count(*) FROM spool").fetchone()[0] == 1210
    clock[0] = 4700.0  # 1..1200 (acked at 1000) are due; 1201..1205 (acked at 2000) are not
    before = sp.bytes
    sp.ack(1210)
    assert [r[0] for r in sp.db.execute("SELECT seq FROM spool ORDER BY seq")] == list(range(1201, 1211))
    assert sp.bytes == sp.db.execute("SELECT sum(length(data)) FROM spool").fetchone()[0] < before
    assert sp.unack_after(1200) == 1201  # what is kept can still be given back


def test_rows_acked_while_the_clock_ran_ahead_do_not_hold_expiry_back(tmp_path, monkeypatch):
    sp = Spool(tmp_path / "s.db", 10**9, keep_acked=3600)
    clock = [100_000.0]  # the RTC is a day ahead
    monkeypatch.setattr("agent.spool.time.time", lambda: clock[0])
    sp.ack(sp.append([log(i) for i in range(1, 11)]))
    clock[0] = 10_000.0  # NTP sets it right
    sp.ack(sp.append([log(i) for i in range(11, 21)]))
    clock[0] = 10_000.0 + 3601  # keep_acked after the clock was fixed: all of it is due
    sp.ack(sp.append([log(21)]))
    assert [r[0] for r in sp.db.execute("SELECT seq FROM spool")] == [21]
    assert sp.bytes == len(log(21))
