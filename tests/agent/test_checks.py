"""Active checks against real servers on loopback: HTTP (status, text, latency, timeout), TCP,
TLS with a self-signed certificate made to expire in 5 days, HTTPS, DNS; settings errors."""

from __future__ import annotations

import pytest
from checks_servers import Site, self_signed, server_ctx

from agent.collectors.checks import parse_checks, run_check
from tests.conftest import free_port


def check(**kw):
    (c,) = parse_checks([{"name": "c", **kw}])
    return c


@pytest.fixture
async def site():
    s = await Site().start()
    yield s
    await s.stop()


@pytest.fixture
async def tls_site(tmp_path):
    crt, key = self_signed(tmp_path, days=5)
    s = await Site().start(server_ctx(crt, key))
    yield s
    await s.stop()


async def test_http_status_text_latency_and_timeout(site):
    base = f"http://127.0.0.1:{site.port}"
    r = await run_check(check(type="http", target=f"{base}/ok", expect_text="nominal"))
    assert r.ok and r.status == 200 and r.error is None and 0 < r.latency_ms < 5000
    r = await run_check(check(type="http", target=f"{base}/ok", expect_text="degraded"))
    assert not r.ok and r.status == 200 and r.error == "expected text 'degraded' not found"
    r = await run_check(check(type="http", target=f"{base}/broken"))
    assert not r.ok and r.status == 500 and r.error == "HTTP 500"
    r = await run_check(check(type="http", target=f"{base}/broken", expect_status=[500]))
    assert r.ok
    r = await run_check(check(type="http", target=f"{base}/slow", timeout=0.5))
    assert not r.ok and r.error == "no answer within 0.5s" and r.latency_ms >= 500


async def test_tcp_open_and_closed(site):
    assert (await run_check(check(type="tcp", target=f"127.0.0.1:{site.port}"))).ok
    r = await run_check(check(type="tcp", target=f"127.0.0.1:{free_port()}"))
    assert not r.ok and "ConnectionRefusedError" in r.error


async def test_tls_expiry_of_a_self_signed_certificate(tls_site):
    target = f"localhost:{tls_site.port}"
    r = await run_check(check(type="tls", target=target, verify=False))
    assert r.ok and 4.9 < r.cert_days < 5.01 and r.cert_expires > r.ts
    # verified: not trusted, and the expiry is still reported
    r = await run_check(check(type="tls", target=target))
    assert not r.ok and r.error.startswith("certificate not trusted: self-signed certificate")
    assert 4.9 < r.cert_days < 5.01


async def test_tls_expired_certificate_is_down(tmp_path):
    crt, key = self_signed(tmp_path, days=-0.5)
    s = await Site().start(server_ctx(crt, key))
    try:
        r = await run_check(check(type="tls", target=f"localhost:{s.port}", verify=False))
    finally:
        await s.stop()
    assert not r.ok and r.error.startswith("certificate expired") and r.cert_days < 0


async def test_https_reports_the_certificate(tls_site):
    url = f"https://localhost:{tls_site.port}/ok"
    r = await run_check(check(type="http", target=url, verify=False, expect_text="nominal"))
    assert r.ok and r.status == 200 and 4.9 < r.cert_days < 5.01
    r = await run_check(check(type="http", target=url))
    assert not r.ok and r.error.startswith("certificate not trusted") and 4.9 < r.cert_days < 5.01


async def test_dns():
    r = await run_check(check(type="dns", target="localhost", expect_address=["127.0.0.1"]))
    assert r.ok and "127.0.0.1" in r.detail.split()
    r = await run_check(check(type="dns", target="no-such-host.invalid"))
    assert not r.ok and "gaierror" in r.error


@pytest.mark.parametrize("bad, message", [
    ([{"name": "a", "type": "ftp", "target": "x"}], "checks[0]: Invalid enum value 'ftp' - at `type`"),
    ([{"name": "a", "type": "tcp", "target": "nas"}], "checks[0] ('a'): target 'nas' is not host:port"),
    ([{"name": "a", "type": "http", "target": "nas.lan"}], "is not an http:// or https:// URL"),
    ([{"name": "a", "type": "dns", "target": "x", "expect": 1}], "unknown field `expect`"),
    ([{"name": "a", "type": "dns", "target": "x"}] * 2, "checks[1]: the name 'a' is used twice"),
    ('[{"name": ', "checks: not a JSON list of checks"),
])
def test_bad_settings_are_named(bad, message):
    with pytest.raises(ValueError) as e:
        parse_checks(bad)
    assert message in str(e.value)


def test_an_older_hub_keeps_the_new_kinds_as_unknown_events(monkeypatch):
    """A hub from before check/container/file_baseline decodes them as Unknown (stored, not
    projected) instead of refusing the batch: its decoder simply lacks the types."""
    import time
    from typing import Union

    import msgspec

    from agent import wire

    new = (wire.CheckResult, wire.Container, wire.FileBaseline)
    old_types = tuple(t for t in wire.AnyEvent.__args__ if t not in new)
    monkeypatch.setattr(wire, "event_decoder", msgspec.msgpack.Decoder(Union[old_types]))  # noqa: UP007
    monkeypatch.setattr(wire, "KINDS", frozenset(t.__struct_config__.tag for t in old_types))
    events = [wire.CheckResult(ts=time.time(), name="c", type="tcp", target="h:1", ok=True, latency_ms=1.0),
              wire.Container(ts=time.time(), name="web", id="a", image="nginx", state="running"),
              wire.FileBaseline(ts=time.time(), files=[wire.BaselineFile("/etc/hosts", 1, 0o644, 0, 0)])]
    for ev in events:
        got = wire.decode_event(wire.encode_event(ev))
        assert isinstance(got, wire.Unknown) and got.kind == ev.__struct_config__.tag
