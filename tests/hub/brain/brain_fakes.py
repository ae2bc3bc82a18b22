"""Fakes that implement the brain's model interface (hub.brain.model.Model)."""

from __future__ import annotations

import json
import time

from agent import playbook
from hub.brain.model import Completion, ModelError

RESTART = """#!/usr/bin/env bash
# ---
# name: restart-unit
# description: Restart a systemd unit, then show whether it came back.
# risk: change
# timeout: 120
# params:
#   unit: {type: unit, required: true, description: The unit to restart.}
# ---
"""
JOURNAL = """#!/usr/bin/env bash
# ---
# name: journal-vacuum
# description: Shrink the systemd journal to a size limit, oldest entries first.
# risk: change
# timeout: 300
# params:
#   size: {type: string, default: 500M, pattern: '^[0-9]{1,6}[KMG]$', description: Keep at most this much journal.}
# ---
"""
CLEAN = """#!/usr/bin/env bash
# ---
# name: clean-tmp
# description: Delete files older than an age from a temporary directory (/tmp or /var/tmp only).
# risk: change
# timeout: 300
# params:
#   path: {type: path, required: true, pattern: '^/(tmp|var/tmp)(/.*)?$', description: The directory to clean.}
#   age: {type: duration, default: 7d, min: 60, max: 31536000, description: Minimum age of deleted files.}
# ---
"""


def playbooks() -> dict:
    return {pb.name: pb for pb in (playbook.parse(t) for t in (RESTART, JOURNAL, CLEAN))}


class FakeModel:
    """Answers with preset texts, in order; records what it was asked."""

    path = "/models/fake.gguf"
    sha256 = "f" * 64

    def __init__(self, *answers: str | dict | Exception, delay: float = 0.0):
        self.answers = list(answers)
        self.delay = delay
        self.calls: list[dict] = []

    def complete(self, system, user, schema, *, max_tokens=160, timeout=20.0, stop_after=None):
        self.calls.append({"system": system, "user": user, "schema": schema, "max_tokens": max_tokens})
        if self.delay > timeout:
            raise ModelError("model took longer than the brain timeout")
        time.sleep(self.delay)
        a = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(a, Exception):
            raise a
        text = a if isinstance(a, str) else json.dumps(a)
        return Completion(text=text, prompt_tokens=len(user) // 4, completion_tokens=len(text) // 4, latency_ms=1)
