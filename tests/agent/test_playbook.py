"""Playbook headers and parameter validation: the one gate every parameter passes, on the hub
and again on the node."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import playbook as pbm
from tests.conftest import ROOT

SHIPPED = ROOT / "playbooks"


def write(tmp_path, name, header, body="echo hi\n"):
    p = tmp_path / f"{name}.sh"
    p.write_text("#!/usr/bin/env bash\n# ---\n" + "".join(
        f"# {line}\n" if line else "#\n" for line in textwrap.dedent(header).strip("\n").splitlines()
    ) + "# ---\n" + body)
    return p


GOOD = """
name: demo
description: A demo.
risk: change
timeout: 30
params:
  unit: {type: unit, required: true}
  path: {type: path, default: /tmp}
  age: {type: duration, default: 1h, min: 60}
  count: {type: int, default: 5, min: 1, max: 10}
  addr: {type: cidr}
  ip: {type: ipaddr}
  word: {type: string}
  color: {type: enum, enum: [red, blue]}
  tag: {type: string, pattern: "v[0-9]+", max_length: 5}
check: bash "$PLAYBOOK_PATH" check
verify: "true"
"""


@pytest.fixture
def demo(tmp_path):
    return pbm.load(write(tmp_path, "demo", GOOD))


def test_header_fields(demo, tmp_path):
    assert (demo.name, demo.risk, demo.timeout) == ("demo", "change", 30)
    assert demo.check == 'bash "$PLAYBOOK_PATH" check' and demo.verify == "true" and demo.rollback is None
    assert demo.params["unit"].required and demo.params["age"].default == "3600"
    import hashlib
    assert demo.sha256 == hashlib.sha256((tmp_path / "demo.sh").read_bytes()).hexdigest()


def test_valid_params_are_normalised_and_defaulted(demo):
    out = pbm.validate_params(demo, {"unit": "nginx", "path": "/tmp//a/./b/", "age": "2h", "count": 7,
                                     "addr": "10.0.0.7", "ip": "::ffff:0:1", "color": "red", "tag": "v12"})
    assert out == {"unit": "nginx.service", "path": "/tmp/a/b", "age": "7200", "count": "7",
                   "addr": "10.0.0.7/32", "ip": "::ffff:0:1", "color": "red", "tag": "v12"}
    assert pbm.env_of({"unit": "x.service"}) == {"PARAM_UNIT": "x.service"}


HOSTILE = [
    ({"word": "x; rm -rf /"}, "word", "only letters"),
    ({"word": "$(id)"}, "word", "only letters"),
    ({"word": "`id`"}, "word", "only letters"),
    ({"word": "a\nb"}, "word", "newline"),
    ({"word": "a\rb"}, "word", "newline"),
    ({"word": "a\x00b"}, "word", "NUL"),
    ({"word": "a\x1bb"}, "word", "control character"),
    ({"word": "a" * 300}, "word", "the limit is 256"),
    ({"tag": "v123456"}, "tag", "the limit is 5"),
    ({"tag": "xv1"}, "tag", "does not match"),
    ({"tag": "v1\n"}, "tag", "newline"),
    ({"path": "../etc"}, "path", "not an absolute path"),
    ({"path": "/tmp/../etc"}, "path", "'..'"),
    ({"path": "/tmp/$(id)"}, "path", "only letters"),
    ({"unit": "nginx; reboot"}, "unit", "not a systemd unit"),
    ({"unit": "-H.service"}, "unit", "not a systemd unit"),
    ({"count": "5; id"}, "count", "not an integer"),
    ({"count": 11}, "count", "above the maximum"),
    ({"count": True}, "count", "string or an integer"),
    ({"age": "30"}, "age", "below the minimum"),
    ({"age": "1h; id"}, "age", "not a duration"),
    ({"addr": "10.0.0.1 -j ACCEPT"}, "addr", "may only hold"),
    ({"ip": "10.0.0.0/8"}, "ip", "not an IP address"),
    ({"color": "green"}, "color", "not one of red, blue"),
    ({"word": ["a"]}, "word", "string or an integer"),
]


@pytest.mark.parametrize("extra,name,needle", HOSTILE)
def test_hostile_values_are_refused_naming_parameter_and_rule(demo, extra, name, needle):
    with pytest.raises(ValueError) as e:
        pbm.validate_params(demo, {"unit": "ok.service", **extra})
    assert f"'{name}'" in str(e.value) and needle in str(e.value)


def test_unknown_and_missing_parameters(demo):
    with pytest.raises(ValueError, match="unknown parameter 'evil'"):
        pbm.validate_params(demo, {"unit": "a.service", "evil": "1"})
    with pytest.raises(ValueError, match="'unit' is required"):
        pbm.validate_params(demo, {})
    with pytest.raises(ValueError, match="must be a mapping"):
        pbm.validate_params(demo, ["unit"])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_no_accepted_value_carries_shell_syntax(value):
    pb = pbm.Playbook("x", "x", "change", 5, params={"s": pbm.ParamSpec(type="string"), "p": pbm.ParamSpec(type="path")})
    for name in ("s", "p"):
        try:
            out = pbm.validate_params(pb, {name: value})[name]
        except ValueError:
            continue
        assert not re.search(r"[;&|`$<>()\\\n\r\x00'\"*?!{}\[\]#~]", out), out


def test_json_schema_matches_the_validator(demo):
    schema = pbm.json_schema(demo)
    assert schema["additionalProperties"] is False and schema["required"] == ["unit"]
    jsonschema.validate({"unit": "nginx.service", "count": 3, "tag": "v1"}, schema)
    for bad in ({"unit": "x", "evil": 1}, {"tag": "zzz"}, {"unit": "x", "color": "green"}, {"unit": "a", "count": 99}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


@pytest.mark.parametrize("header,line,key,needle", [
    (GOOD.replace("risk: change", "risk: spicy"), 5, "risk", "not one of"),
    (GOOD.replace("timeout: 30", "timeout: forever"), 6, "timeout", "whole seconds"),
    (GOOD + "colour: red\n", 19, "colour", "unknown key"),
    (GOOD.replace("{type: unit, required: true}", "{type: unitt}"), 8, "params.unit.type", "not one of"),
    (GOOD.replace('pattern: "v[0-9]+"', 'pattern: "v[0-9"'), 16, "params.tag.pattern", "bad regular expression"),
    (GOOD.replace("default: 5, min: 1", "default: 50, min: 1"), 11, "params.count.default", "above the maximum"),
    (GOOD.replace("name: demo", "name: Demo!"), 3, "name", "not a playbook name"),
    (GOOD.replace("description: A demo.\n", ""), 3, "description", "required key"),
    (GOOD.replace("  word: {type: string}", "  Word: {type: string}"), 14, "params.Word", "parameter names"),
])
def test_bad_headers_name_file_line_and_key(tmp_path, header, line, key, needle):
    p = write(tmp_path, "demo", header)
    with pytest.raises(pbm.PlaybookError) as e:
        pbm.load(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:{line}: {key}:"), msg
    assert needle in msg


def test_bad_yaml_and_missing_header(tmp_path):
    p = write(tmp_path, "demo", "name: [demo\n")
    with pytest.raises(pbm.PlaybookError, match=r"demo.sh:\d+: invalid YAML"):
        pbm.load(p)
    q = tmp_path / "bare.sh"
    q.write_text("#!/bin/bash\necho no header\n")
    with pytest.raises(pbm.PlaybookError, match="no header"):
        pbm.load(q)


def test_load_dir_collects_errors_and_keeps_good_ones(tmp_path):
    write(tmp_path, "demo", GOOD)
    write(tmp_path, "broken", GOOD.replace("name: demo", "name: broken").replace("risk: change", "risk: x"))
    errors: list = []
    books = pbm.load_dir(tmp_path, errors)
    assert list(books) == ["demo"]
    assert len(errors) == 1 and "broken.sh" in str(errors[0]) and "risk" in str(errors[0])
    with pytest.raises(pbm.PlaybookError):
        pbm.load_dir(tmp_path)


def test_shipped_playbooks_all_load():
    errors: list = []
    books = pbm.load_dir(SHIPPED, errors)
    assert errors == []
    assert {"restart-unit", "unit-logs", "disk-report", "clean-tmp", "journal-vacuum", "logrotate-force",
            "apt-upgrade", "apt-autoremove", "block-address", "restart-container"} <= set(books)
    assert books["unit-logs"].risk == books["disk-report"].risk == "read-only"
    assert set(books["block-address"].params) == {"address", "duration"}
    # the clean-up refuses paths outside the temp directories at the header already
    with pytest.raises(ValueError, match="does not match"):
        pbm.validate_params(books["clean-tmp"], {"path": "/etc"})
    with pytest.raises(ValueError, match=r"'\.\.'"):
        pbm.validate_params(books["clean-tmp"], {"path": "/tmp/../etc"})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.sampled_from(["name: demo", "description: d", "risk: change", "timeout: 5", "params:",
                     "  a: {type: int}", "  b: {type: enum}", "  c: [1, 2]", "check: 1", "- x", "&a [*a]",
                     "timeout: -1", "risk: [read-only]", "params: 7", ":", "'", "{", "  x: {pattern: '['}"]),
    st.text(max_size=30)), max_size=12))
def test_any_header_either_loads_or_raises_playbook_error(lines):
    text = "#!/bin/bash\n# ---\n" + "".join(f"# {line}\n" for line in lines) + "# ---\necho\n"
    try:
        pb = pbm.parse(text, "demo.sh")
    except pbm.PlaybookError as e:
        assert str(e).startswith("demo.sh")
    else:
        assert pb.name == "demo" and pb.risk in pbm.RISKS


def test_ipv6_scope_ids_cannot_smuggle_syntax():
    from pathlib import Path

    pb = pbm.load(Path(ROOT / "playbooks" / "block-address.sh"))
    for bad in ("fe80::%x } ; flush ruleset ; add table inet t {/64", "fe80::1%eth0", "1.2.3.4 }"):
        with pytest.raises(ValueError, match="may only hold"):
            pbm.validate_params(pb, {"address": bad, "duration": "1h"})
    assert pbm.validate_params(pb, {"address": "fe80::1", "duration": "1h"})["address"] == "fe80::1/128"


def test_the_running_agent_loads_yaml_only_to_parse_a_playbook():
    # a real interpreter importing what `homelab-agent run` imports; yaml comes with a job
    code = ("import sys, agent.cli, agent.runtime, agent.jobs\n"
            "before = 'yaml' in sys.modules\n"
            "from agent import playbook\n"
            "playbook.parse('#!/bin/sh\\n# ---\\n# name: x\\n# description: y\\n# risk: read-only\\n# timeout: 10\\n# ---\\n')\n"
            "print(before, 'yaml' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.stdout.split() == ["False", "True"], r.stderr
