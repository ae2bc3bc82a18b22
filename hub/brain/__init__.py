"""The brain: a local llama.cpp model that proposes, explains and answers, and cannot do harm.

- ``decide(alert, candidates, playbooks)`` picks a fix among the rule's candidates (propose.py)
- ``ask`` answers questions from query templates (ask.py), ``explain`` tells an alert's story
  (explain.py), ``digest`` finds maintenance to propose (digest.py)

The model itself runs in a worker process (worker.py): the hub never imports llama_cpp, and a
crash or hang in it costs one decision, recorded with its reason.
"""

from __future__ import annotations

from typing import Any


def decide(alert: dict, candidates: list[dict], playbooks: dict[str, Any], **kw: Any) -> dict:
    from hub.brain.propose import decide as _decide

    return _decide(alert, candidates, playbooks, **kw)


def guard(db: Any, alert: dict, pb_name: str, pb: Any, params: dict) -> str | None:
    """Why a candidate fix must not be proposed (blocking our own, restarting what recovered),
    or None: the deterministic guards, whatever chose the candidate (hub/brain/guards.py)."""
    from hub.brain.guards import check

    return check(db, alert, pb_name, pb, params)


def model_path(setting: str | None) -> Any:
    """The GGUF file the ``model`` setting names (None: disabled, or nothing installed)."""
    from hub.brain.model import resolve_path

    return resolve_path(setting)


def worker_state() -> list[dict]:
    """The model workers this hub has started (pid while alive, starts, failures, the last
    failure's reason); empty before the first decision."""
    from hub.brain.worker import workers_state

    return workers_state()


__all__ = ["decide", "guard", "model_path", "worker_state"]
