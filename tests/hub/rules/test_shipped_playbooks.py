"""Every playbook a shipped rule may propose is a shipped playbook, and the parameters the
rule's own unit tests render pass that playbook's declared schema."""

from __future__ import annotations

from agent.playbook import validate_params
from hub.playbooks.registry import Registry
from hub.rules.loader import load_paths
from tests.conftest import ROOT


def test_proposed_playbooks_exist_and_take_these_parameters():
    rules, errors = load_paths([ROOT / "rules"])
    assert not errors
    books = Registry(ROOT / "playbooks").all()
    proposing = [r for r in rules if r.propose]
    assert {"ssh-brute-force", "unit-failed", "disk-almost-full"} <= {r.name for r in proposing}
    for r in proposing:
        for name, params, _auto in r.propose:
            assert name in books, f"rule {r.name} proposes unknown playbook {name}"
            declared = set(books[name].params)
            assert set(params) <= declared, f"rule {r.name}: {name} has no parameter(s) {set(params) - declared}"


def test_rendered_candidates_pass_the_playbook_schema():
    """The values the shipped rules render in their unit tests are valid for the playbooks."""
    books = Registry(ROOT / "playbooks").all()
    examples = {
        "block-address": {"address": "203.0.113.9", "duration": "1h"},
        "restart-unit": {"unit": "nginx.service"},
        "unit-logs": {"unit": "nginx.service"},
        "disk-report": {"path": "/srv"},
        "clean-tmp": {"path": "/tmp", "age": "7d"},
        "apt-upgrade": {"kind": "upgrade"},
    }
    for name, params in examples.items():
        validate_params(books[name], params)
