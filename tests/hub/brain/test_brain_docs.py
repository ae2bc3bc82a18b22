"""docs/brain.md documents every query template, digest check and brain setting."""

from __future__ import annotations

from pathlib import Path

from hub.brain.digest import CHECKS
from hub.brain.templates import TEMPLATES
from hub.config import HUB_OPTS

DOC = (Path(__file__).resolve().parents[3] / "docs" / "brain.md").read_text()


def test_templates_checks_and_settings_are_documented():
    for t in TEMPLATES:
        assert f"`{t.id}`" in DOC, f"template {t.id} is not in docs/brain.md"
    for check in CHECKS:
        assert f"`{check.__name__}`" in DOC, f"digest check {check.__name__} is not in docs/brain.md"
    for o in HUB_OPTS:
        if o.key == "model" or o.key.startswith("brain_"):
            assert f"`{o.key}`" in DOC and o.env in DOC, f"setting {o.key} is not in docs/brain.md"
    for cmd in ("homelab-hub ask", "homelab-hub explain", "homelab-hub digest"):
        assert f"`{cmd}" in DOC
