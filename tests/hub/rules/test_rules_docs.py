"""Every rule key in the shipped JSON Schema, every operator and every rule-test key is in docs/rules.md."""

from __future__ import annotations

from hub.rules import testing
from hub.rules.conditions import COMBINATORS, OPERATORS
from hub.rules.loader import schema
from tests.conftest import ROOT

DOC = (ROOT / "docs" / "rules.md").read_text()


def keys(node, out: set[str]) -> set[str]:
    if isinstance(node, dict):
        for k, v in node.get("properties", {}).items():
            out.add(k)
            keys(v, out)
        for sub in ("items", "additionalProperties"):
            keys(node.get(sub), out)
        for alt in node.get("oneOf", []) + node.get("anyOf", []):
            keys(alt, out)
        for d in node.get("$defs", {}).values():
            keys(d, out)
    return out


def test_every_schema_key_is_documented():
    found = keys(schema(), set())
    assert {"rules", "macros", "keep_firing_for", "inhibited_by", "horizon", "auto"} <= found
    missing = sorted(k for k in found if f"`{k}`" not in DOC)
    assert not missing, f"rule keys missing from docs/rules.md: {missing}"


def test_every_operator_function_and_test_key_is_documented():
    fns = schema()["$defs"]["rule"]["properties"]["aggregate"]["properties"]["fn"]["enum"]
    words = [*OPERATORS, *COMBINATORS, *fns, *testing.TEST_KEYS, *testing.CASE_KEYS, *testing.INPUT_KEYS,
             *testing.EXPECT_KEYS, *testing.ALERT_KEYS]
    missing = sorted({w for w in words if f"`{w}`" not in DOC})
    assert not missing, f"missing from docs/rules.md: {missing}"


def test_every_shipped_rule_is_listed():
    from hub.paths import shipped
    from hub.rules.loader import load_paths

    rules, errors = load_paths([shipped("rules")])
    assert not errors
    missing = [r.name for r in rules if f"`{r.name}`" not in DOC]
    assert not missing, missing
