"""Finding 1: what a node reports is hostile wherever it is rendered into a file another
program parses. The Ansible export (checked by the real ansible-inventory and
ansible-playbook), the self-documentation Markdown (rendered by a real CommonMark parser) and
the Prometheus exposition (parsed by prometheus_client's own parser)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from markdown_it import MarkdownIt
from prometheus_client.parser import text_string_to_metric_families

from agent import wire
from hub.docs import pages
from hub.store import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub"))
from selfdoc_helpers import FakeNode, packages, service  # noqa: E402

BIN = Path(sys.executable).parent
PROXY = "-o ProxyCommand='sh -c \"touch {pwned}\"'"


def hostile_inventory(pwned: Path, hostname: str = "ok") -> wire.Inventory:
    evil = f"10.0.0.5 ansible_connection=ssh ansible_ssh_common_args=\"{PROXY.format(pwned=pwned)}\""
    return wire.Inventory(ts=1000.0, hostname=hostname, facts={
        "primary_ip": "10.0.0.5\nevil ansible_connection=local\n[all:vars]\nansible_ssh_common_args="
                      + PROXY.format(pwned=pwned),
        "tailscale_ip": evil, "os": {"pretty_name": "<script>alert(1)</script>"}})


def ansible_env(tmp_path: Path) -> dict:
    return {**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path / "al"), "ANSIBLE_HOME": str(tmp_path / "ah"),
            "ANSIBLE_NOCOLOR": "1"}


@pytest.mark.skipif(not (BIN / "ansible-inventory").exists(), reason="ansible-core is not installed")
async def test_hostile_facts_do_not_reach_the_ansible_inventory(hub, tmp_path):
    pwned = tmp_path / "pwned"
    node = await FakeNode(hub, "evil").join()
    await node.send(hostile_inventory(pwned), packages(("bash", "5.2", True), ("`x`\n# owned <b>", "1", True)),
                    service("a`b.service"))
    out = tmp_path / "export"
    r = subprocess.run([sys.executable, "-m", "hub", "ansible", "export", "evil", "-o", str(out),
                        "--data-dir", str(hub.data_dir)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    inv = subprocess.run([str(BIN / "ansible-inventory"), "-i", "inventory.ini", "--list"], cwd=out,
                         capture_output=True, text=True, timeout=120, env=ansible_env(tmp_path))
    assert inv.returncode == 0, inv.stderr
    parsed = json.loads(inv.stdout)
    hostvars = parsed["_meta"]["hostvars"]
    assert set(hostvars) == {"evil"}, hostvars  # no host named "evil ansible_connection=local"
    # neither address is an address: the node's own connection address (loopback) is used
    assert hostvars["evil"]["ansible_host"] == "127.0.0.1", hostvars
    assert [k for k in hostvars["evil"] if k.startswith("ansible_")] == ["ansible_host"], hostvars
    syntax = subprocess.run([str(BIN / "ansible-playbook"), "-i", "inventory.ini", "site.yml", "--syntax-check"],
                            cwd=out, capture_output=True, text=True, timeout=120, env=ansible_env(tmp_path))
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr
    assert not pwned.exists()
    readme = MarkdownIt("commonmark").render((out / "README.md").read_text())
    assert "<b>" not in readme and "<h1>owned" not in readme
    assert "\\u000a# owned" in readme  # named, harmlessly, so the administrator can look


async def test_a_valid_tailnet_address_is_used(hub, tmp_path):
    node = await FakeNode(hub, "good").join()
    await node.send(wire.Inventory(ts=1.0, hostname="good", facts={"primary_ip": "192.168.1.20",
                                                                   "tailscale_ip": "100.64.0.7"}))
    from hub.ansible import export

    db = connect(hub.data_dir / "homelab.db", readonly=True)
    try:
        files = export.render(export.snapshot(db, "good"), "http://hub")
    finally:
        db.close()
    assert files["inventory.ini"] == "[homelab]\ngood ansible_host=100.64.0.7\n"


async def test_hostile_facts_render_as_text_in_self_docs(hub, tmp_path):
    node = await FakeNode(hub, "evil").join()
    await node.send(
        hostile_inventory(tmp_path / "x", hostname='<img src=x onerror="alert(1)">'),
        packages(("[click](javascript:alert(1))", "1<script>", True), ("ok|pipe\n## Injected", "2", True)),
        service("`code` <iframe>.service"))
    db = connect(hub.data_dir / "homelab.db", readonly=True)
    try:
        page = pages.node_page(db, "evil")
        index = pages.index_page(db)
    finally:
        db.close()
    md = MarkdownIt("commonmark").enable("table")
    html = md.render(page)
    for bad in ("<img", "<script", "<iframe", 'href="javascript', "<h2>Injected", "<code>code</code>"):
        assert bad not in html, (bad, html)
    assert "&lt;img src=x onerror=" in html  # still shown, as text
    assert md.render(index).count('<a href="nodes/evil.md">evil</a>') == 1
    assert "&lt;img" in md.render(index)


async def test_prometheus_labels_from_a_node_stay_labels(hub):
    node = await FakeNode(hub, "evil").join()
    samples = {'disk_used_ratio{mount="/a\\"b\\\\\\nc",x="1"}': 0.5,
               'evil{a="1"}\nhomelab_node_up{node="other"} 1\n#': 1.0,
               'up{node="other",job="x",__name__="y"}': 2.0}
    await node.send(wire.Metrics(ts=__import__("time").time(), samples=samples))
    async with aiohttp.ClientSession() as s, s.get(f"{hub.url}/metrics") as r:
        text = await r.text()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    ups = [(s.labels, s.value) for s in fams["homelab_node_up"].samples]
    assert ups == [({"node": "evil"}, 1.0)], ups  # no forged sample for another node
    disk = fams["homelab_disk_used_ratio"].samples
    assert [s.labels for s in disk] == [{"mount": '/a"b\\nc', "x": "1", "node": "evil"}]
    up = fams["homelab_up"].samples[0].labels
    assert up["node"] == "evil" and up["exported_node"] == "other" and "__name__" not in up
