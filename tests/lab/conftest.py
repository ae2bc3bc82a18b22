"""The node lab's fixtures: one hub and network per session, fresh booted nodes per test
(tests/lab/nodelab.py). Every test here skips, with the reason, where the lab cannot run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nodelab  # noqa: E402


def pytest_collection_modifyitems(items):
    # the first run on a machine builds the image (~2 min); a scenario waits on real timers
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.timeout(900))


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    try:
        # plus the lab's own rules (tests/lab/rules): scenarios reach playbooks no shipped
        # rule proposes yet through the real rule -> proposal -> approve path
        lab = nodelab.Lab(tmp_path_factory.mktemp("lab"),
                          hub_env={"HOMELAB_HUB_RULES_DIR": str(Path(__file__).parent / "rules")})
    except nodelab.LabUnavailable as e:
        pytest.skip(f"node lab unavailable: {e}")
    lab.up()
    yield lab
    lab.close()


@pytest.fixture
def enrolled(lab, request):
    """Factory: boot a node named after the test and install the agent as a user does."""
    made = []

    def make(suffix: str = "", **_) -> nodelab.Node:
        # two tests may share a 12-character stem; the lab's node count keeps names apart
        stem = request.node.name.removeprefix("test_")[:12].replace("_", "-").strip("-")
        name = f"{stem}-{lab.made + 1}{suffix}"
        node = lab.node(name)
        made.append(node)
        node.enroll()
        return node

    yield make
    for node in made:
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            sys.stderr.write(f"\n--- {node.name}: agent journal ---\n{node.journal()}\n")
        node.stop()
        lab.nodes.pop(node.name, None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep

