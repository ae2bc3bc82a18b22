"""``homelab-hub ask``: answer a question from the database, showing the query and the rows.

1. How-to questions go to the knowledge base (FTS search).
2. Otherwise a BM25 retriever ranks the query templates (templates.py) and parameters are
   read from the question deterministically: node, unit and package names the hub knows,
   paths, quoted text, users, look-back periods ("this week", "last 3 days").
3. If the retriever is not clearly sure (others score within ``brain_shortlist`` of its best),
   the model picks among those (at most 4), under a schema that is an enum of their ids;
   no model, a timeout or a bad answer -> the retriever's top.
4. With ``brain_free_sql`` on and a model configured, a question no template fits may be
   answered by a SELECT the model writes. Every query, template or not, runs through
   sqlsafe: read-only, authorizer-checked, row- and time-limited.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from hub.brain import runtime
from hub.brain.model import ModelError, parse_json
from hub.brain.rank import BM25
from hub.brain.sqlsafe import QueryError, run_select
from hub.brain.templates import BY_ID, TEMPLATES, Template

log = logging.getLogger(__name__)

TOP_K = 4  # at most this many templates are offered to the model (those within brain_shortlist of the best)
MIN_SCORE = 1.0  # below this no template really fits (free SQL may be tried)
QUESTION_MAX = 500

_HOWTO = re.compile(r"^\s*(how (do|can|should|would|to)\b|how-to\b|what('?s| is) the (procedure|process|command|way)\b"
                    r"|where (do|can) i\b|is there a (runbook|note|doc)|(runbook|notes?|docs?) (on|about|for)\b"
                    r"|explain how\b|steps to\b)", re.I)
_PATH = re.compile(r"(?<![\w~])(/[A-Za-z0-9_.@%+=:,/-]*)")
_QUOTED = re.compile(r"\"([^\"]{1,200})\"|'([^']{1,200})'|“([^”]{1,200})”")
_WORDS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+@:-]*")
_USER = re.compile(r"\b(?:by|user|as)\s+(?:user\s+)?([a-z_][a-z0-9_-]{0,31})\b", re.I)
# "what did alice run", "what has root executed": shell history, whoever the hub has seen or not
_DID_RUN = re.compile(r"\b(?:did|has|have)\s+([a-z_][a-z0-9_-]{0,31})\s+(?:run|ran|execute|executed|type|typed)\b", re.I)
_UNITS = {"minute": 60, "min": 60, "hour": 3600, "day": 86400, "week": 604800, "month": 2592000, "year": 31536000}
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_NUM_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "ten": 10, "a": 1, "an": 1}
_NOT_USERS = {"the", "a", "an", "node", "nodes", "host", "me", "who", "whom", "name", "default", "root's", "size", "cpu",
              "memory", "disk", "time", "date", "i", "you", "we", "they", "he", "she", "it"}

_PERIOD_WORDS = re.compile(
    r"\b(last|past|previous|since|ago|today|yesterday|tonight|this|within|recently|lately|\d+|"
    r"now|currently|monday|tuesday|wednesday|thursday|friday|saturday|sunday|"
    r"(minute|min|hour|day|week|month|year)s?)\b", re.I)

SYSTEM = ("You map a homelab question to the one query template that answers it. "
          "Answer with JSON only.")


def _known(path: Path) -> dict[str, set[str]]:
    """Names the hub knows, so a question's words can be recognised as nodes, units, packages."""
    out: dict[str, set[str]] = {"node": set(), "unit": set(), "package": set(), "user": set()}
    if not Path(path).exists():
        return out
    from hub.store import connect

    db = connect(path, readonly=True)
    queries = {
        "node": "SELECT name FROM nodes",
        "unit": "SELECT DISTINCT unit FROM services UNION SELECT DISTINCT unit FROM service_changes",
        "package": "SELECT DISTINCT name FROM packages UNION SELECT DISTINCT name FROM package_changes",
        "user": "SELECT DISTINCT json_extract(data, '$.user') FROM (SELECT data FROM events WHERE kind = 'command'"
                " ORDER BY ts DESC LIMIT 5000)",
    }
    try:
        for k, sql in queries.items():
            try:
                out[k] = {r[0] for r in db.execute(sql) if r[0]}
            except sqlite3.OperationalError:
                pass
    finally:
        db.close()
    return out


def parse_since(q: str, now: float) -> float | None:
    """A look-back in the question, as seconds back from now; None if it names none."""
    s = q.lower()
    m = re.search(r"\b(?:last|past|previous|in the last|within)\s+(\d+|one|two|three|four|five|six|seven|ten|a|an)?\s*"
                  r"(minute|min|hour|day|week|month|year)s?\b", s)
    if m:
        n = m.group(1)
        k = int(n) if n and n.isdigit() else _NUM_WORDS.get(n or "", 1)
        return k * _UNITS[m.group(2)]
    m = re.search(r"\b(\d+|one|two|three|four|five|six|seven|ten|a|an)\s+(minute|min|hour|day|week|month|year)s?\s+ago\b", s)
    if m:
        n = m.group(1)
        return (int(n) if n.isdigit() else _NUM_WORDS.get(n, 1)) * _UNITS[m.group(2)]
    m = re.search(r"\bsince\s+(\d{4}-\d{2}-\d{2})\b", s)
    if m:
        try:
            t = dt.datetime.strptime(m.group(1), "%Y-%m-%d").replace(tzinfo=dt.UTC).timestamp()
            return max(60.0, now - t)
        except ValueError:
            pass
    m = re.search(r"\b(?:since|on)\s+(?:last\s+)?(monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b", s)
    if m:
        today = dt.datetime.fromtimestamp(now, dt.UTC)
        back = (today.weekday() - _WEEKDAYS.index(m.group(1))) % 7 or 7
        start = (today - dt.timedelta(days=back)).replace(hour=0, minute=0, second=0, microsecond=0)
        return now - start.timestamp()
    for words, secs in (("today", 86400), ("yesterday", 2 * 86400), ("this week", 604800),
                        ("last week", 14 * 86400), ("this month", 2592000), ("last month", 2 * 2592000),
                        ("recently", 86400), ("lately", 7 * 86400), ("tonight", 86400), ("this morning", 86400)):
        if words in s:
            return float(secs)
    return None


def _duration(v: str) -> float:
    from agent.settings import parse_duration

    return parse_duration(v)


def extract(q: str, known: dict[str, set[str]], now: float) -> dict[str, Any]:
    """Parameters found in the question. Only names the hub knows count as node/unit/package."""
    found: dict[str, Any] = {}
    words = _WORDS.findall(q)
    lower = {w.lower().rstrip(".,?!:;'\""): w for w in words}
    lower.update({k[:-2]: v for k, v in list(lower.items()) if k.endswith("'s")})
    for w in lower:
        for kind in ("node", "unit", "package"):
            names = known.get(kind, set())
            if kind not in found:
                hit = next((n for n in (w, w + ".service") if n in names), None)
                if hit is None:
                    hit = next((n for n in names if n.lower() == w), None) if len(names) < 5000 else None
                if hit is not None and not (kind == "package" and hit in found.values()):
                    found[kind] = hit
    if "unit" not in found:
        m = re.search(r"\b([A-Za-z0-9_@.-]+\.(?:service|timer|socket|mount|path|target))\b", q)
        if m:
            found["unit"] = m.group(1)
    m = _QUOTED.search(q)
    if m:
        found["text"] = next(g for g in m.groups() if g)
    p = _PATH.search(_QUOTED.sub(" ", q))
    if p and len(p.group(1)) > 1:
        found["path"] = p.group(1).rstrip(".,?!:;") or "/"
    users = known.get("user", set())
    m = _USER.search(q) or _DID_RUN.search(q)
    if m and m.group(1).lower() not in _NOT_USERS and m.group(1) != found.get("node"):
        found["user"] = m.group(1)
    else:
        hit = next((v for w, v in lower.items() if w in users), None)
        if hit:
            found["user"] = hit.rstrip("'s") if hit.endswith("'s") else hit
    since = parse_since(q, now)
    if since is not None:
        found["since"] = since
    m = re.search(r"\btop\s+(\d{1,3})\b", q, re.I)
    if m:
        found["limit"] = int(m.group(1))
    return found


_NODE_REF = re.compile(r"\b(?:on|node|host|machine|server|from)\s+([A-Za-z0-9][A-Za-z0-9_.-]{1,62})", re.I)


def _refuse_unknown_node(q: str, known: dict[str, set[str]]) -> None:
    """'what changed on nas' where the hub knows nas01: answering about every node instead would
    be a wrong answer that looks right, so say which node was probably meant."""
    from hub.nodes import suggest, unknown_node

    nodes = sorted(known.get("node", ()))
    others = {n.lower() for k in ("unit", "package", "user") for n in known.get(k, ())}
    for m in _NODE_REF.finditer(q):
        word = m.group(1).rstrip(".,?!:;'\"")
        if word.lower() in others or word.lower() in {n.lower() for n in nodes}:
            continue
        if suggest(word, nodes):
            raise unknown_node(word, nodes)


def _doc(t: Template) -> str:
    return f"{t.id.replace('_', ' ')} {t.title} {t.doc} {t.words}"


_bm25: BM25 | None = None


def retrieve(q: str, found: dict[str, Any]) -> list[tuple[Template, float]]:
    """Templates ranked for the question; a template whose required parameter the question
    does not supply is pushed down, one whose parameters are all there nudged up."""
    global _bm25
    if _bm25 is None:
        _bm25 = BM25([_doc(t) for t in TEMPLATES])
    # Periods and numbers are parameters, not topics: "last 3 days" must not pull "last seen";
    # nor are paths: "/etc/ssh/sshd_config" must not pull "ssh logins".
    topic = _PERIOD_WORDS.sub(" ", _PATH.sub(" path ", q))
    scored = []
    for i, s in enumerate(_bm25.scores(topic)):
        t = TEMPLATES[i]
        req = [k for k, v in t.params.items() if v == "!"]
        if any(k not in found for k in req):
            s *= 0.4
        elif req:
            s *= 1.3
        if "since" in found and "since" in t.params:
            s *= 1.2  # a period in the question asks for history
        scored.append((t, s))
    return sorted(scored, key=lambda p: -p[1])


def bind(t: Template, found: dict[str, Any], now: float) -> dict[str, Any]:
    """The template's SQL arguments from what the question supplied, else the defaults."""
    args: dict[str, Any] = {}
    for k, default in t.params.items():
        if k == "since":
            secs = found.get("since") or _duration(t.since)
            args["since"] = now - float(secs)
        elif k == "limit":
            args["limit"] = max(1, min(int(found.get("limit") or default), 200))
        elif k in found:
            args[k] = str(found[k])
        elif default == "!":
            raise QueryError(f"template {t.id} needs a {k}; name one in the question")
        else:
            args[k] = None
    return args


def is_howto(q: str) -> bool:
    return bool(_HOWTO.match(q))


def _kb(q: str, path: Path) -> dict:
    from hub.store import connect

    out: dict[str, Any] = {"kind": "kb", "template": None, "sql": None,
                           "columns": ["id", "title", "snippet", "source"], "rows": []}
    try:
        from hub import kb
    except ImportError:
        out["answer"] = "the knowledge base is not installed on this hub"
        return out
    db = connect(path, readonly=True)
    try:
        hits = kb.search(db, q, 5, highlight=("", ""))
    except (sqlite3.Error, ValueError) as e:
        out["answer"] = f"knowledge base search failed: {e}"
        return out
    finally:
        db.close()
    out["sql"] = f"kb search: {q}"
    out["rows"] = [[h["passage_id"], h["title"], h["snippet"], h["source"]] for h in hits]
    out["answer"] = f"{len(hits)} passages from the knowledge base" if hits else "nothing in the knowledge base matches"
    return out


def choose_schema(ids: list[str]) -> dict:
    """What the model may answer when it picks a template (one of ``ids``)."""
    return {"type": "object", "properties": {"template": {"enum": ids}}, "required": ["template"],
            "additionalProperties": False}


FREE_SQL_SCHEMA = {"type": "object", "properties": {"sql": {"type": "string", "maxLength": 1000}},
                   "required": ["sql"], "additionalProperties": False}


def _choose(mdl: Any, q: str, top: list[tuple[Template, float]], row: dict) -> tuple[Template, str]:
    ids = [t.id for t, _ in top]
    lines = [f"QUESTION: {q}", "TEMPLATES:"] + [f"- {t.id}: {t.title}. {t.doc}" for t, _ in top]
    lines.append('Answer: {"template": "<id>"}')
    user = "\n".join(lines)
    row["prompt"] = SYSTEM + "\n\n" + user
    schema = choose_schema(ids)
    try:
        out = mdl.complete(SYSTEM, user, schema, max_tokens=24, timeout=runtime.timeout())
    except ModelError as e:
        return top[0][0], f"fallback: {e}"[:500]
    row.update(raw_output=out.text[:5000], prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens)
    try:
        ans = parse_json(out.text)
    except ModelError as e:
        return top[0][0], f"fallback: {e}"[:500]
    tid = ans.get("template") if isinstance(ans, dict) else None
    if tid not in ids or set(ans) != {"template"}:
        return top[0][0], f"fallback: template {str(tid)[:64]!r} was not offered"
    return BY_ID[tid], "accepted"


SCHEMA_HINT = (
    "Tables: nodes(name,last_seen), events(id,node,ts,kind,data JSON), metrics_latest(node,name,labels,value),"
    " services(node,unit,active), packages(node,name,version,state), package_changes(node,ts,action,name,version),"
    " file_changes(node,ts,action,path), device_changes(node,ts,action,subsystem,vendor,model),"
    " inventory(node,os,kernel,memory_bytes), mounts(node,mountpoint,total_bytes) (how full:"
    " metrics_latest name 'disk_used_ratio', labels 'mount=\"/\"'),"
    " alerts(id,node,rule,severity,state,first_seen), changes(node,ts,kind,subject,action,detail)."
    " Times are Unix seconds."
)


def _free_sql(mdl: Any, q: str, path: Path, row: dict) -> dict | None:
    user = f"{SCHEMA_HINT}\nWrite one SQLite SELECT answering: {q}\nAnswer: {{\"sql\": \"SELECT ...\"}}"
    schema = FREE_SQL_SCHEMA
    row["prompt"] = SYSTEM + "\n\n" + user
    try:
        out = mdl.complete("You write read-only SQLite queries. Answer with JSON only.", user, schema,
                           max_tokens=300, timeout=runtime.timeout())
        row.update(raw_output=out.text[:5000], prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens)
        sql = parse_json(out.text).get("sql", "")
        cols, rows, trunc = run_select(path, str(sql), {})
    except (ModelError, QueryError, AttributeError) as e:
        row["outcome"] = f"fallback: free SQL refused: {e}"[:500]
        return None
    row["outcome"] = "accepted"
    return {"kind": "sql", "template": None, "sql": sql, "args": {}, "columns": cols, "rows": rows,
            "truncated": trunc, "chosen_by": "model"}


def ask(question: str, db_path: Path | str, *, model: Any = runtime.DEFAULT, free_sql: bool | None = None,
        record: Any = runtime.DEFAULT, now: float | None = None) -> dict:
    """Answer one question. Returns a JSON-able dict: answer, kind, template, params, sql, args,
    columns, rows, truncated, chosen_by, candidates, decision_id."""
    t0 = time.monotonic()
    q = " ".join(str(question).split())[:QUESTION_MAX]
    if not q:
        raise QueryError("ask what? the question is empty")
    now = time.time() if now is None else now
    path = Path(db_path)
    mdl = runtime.model() if model is runtime.DEFAULT else model
    free_sql = bool(runtime.setting("brain_free_sql", False)) if free_sql is None else free_sql
    if is_howto(q):
        out = _kb(q, path)
        out.update(question=q, params={}, args={}, truncated=False, chosen_by="rule", candidates=[],
                   decision_id=None)
        return out
    known = _known(path)
    found = extract(q, known, now)
    if "node" not in found:
        _refuse_unknown_node(q, known)
    ranked = retrieve(q, found)
    top = ranked[:TOP_K]
    row: dict[str, Any] = {"purpose": "ask", "prompt": q, "context_ids": [t.id for t, _ in top],
                           "model": getattr(mdl, "path", None), "model_sha256": None, "outcome": "retriever"}
    result: dict | None = None
    if free_sql and mdl is not None and top[0][1] < MIN_SCORE:
        result = _free_sql(mdl, q, path, row)
    if result is None:
        ratio = float(runtime.setting("brain_shortlist", 0.6))
        offered = [p for p in top if p[1] >= ratio * top[0][1]] if top[0][1] > 0 else top
        if mdl is None or len(offered) < 2:
            chosen, how = top[0][0], "retriever"
            row["outcome"] = "no_model" if mdl is None else "retriever_confident"
        else:
            chosen, outcome = _choose(mdl, q, offered, row)
            how = "model" if outcome == "accepted" else "retriever"
            row["outcome"] = outcome
        args = bind(chosen, found, now)
        cols, rows, trunc = run_select(path, chosen.sql, args)
        result = {"kind": "template", "template": chosen.id, "title": chosen.title, "sql": chosen.sql,
                  "args": args, "columns": cols, "rows": rows, "truncated": trunc, "chosen_by": how}
    result["answer"] = summarize(result.get("title") or "Query", result["columns"], result["rows"], result["truncated"])
    if result["kind"] == "template":
        chosen_t = BY_ID[result["template"]]
        result["reading"] = reading(chosen_t, result["args"], now)
        result["answer"] = f"Read as: {result['reading']}.\n{result['answer']}"
        result["alternatives"] = [] if result["rows"] else alternatives(chosen_t, ranked, found, now)
        if result["alternatives"]:
            result["answer"] += "\nOther readings: " + "; ".join(f'"{a}"' for a in result["alternatives"])
    result.update(question=q, params={k: v for k, v in found.items()}, candidates=[t.id for t, _ in top])
    row["model_sha256"] = getattr(mdl, "sha256", None) if mdl is not None else None
    row["parsed"] = {"template": result.get("template"), "args": result.get("args"), "sql": result.get("sql")}
    row["latency_ms"] = int((time.monotonic() - t0) * 1000)
    result["decision_id"] = runtime.record(row) if record is runtime.DEFAULT else (record(row) if record else None)
    return result


def _period(secs: float) -> str:
    for name, unit in (("year", 31536000), ("month", 2592000), ("week", 604800), ("day", 86400), ("hour", 3600),
                       ("minute", 60)):
        if secs >= unit and abs(secs / unit - round(secs / unit)) < 0.05:
            n = round(secs / unit)
            return name if n == 1 else f"{n} {name}s"
    return f"{max(1, round(secs / 60))} minutes"


def _scope(args: dict[str, Any], now: float) -> str:
    """The parameters as words: " on web1 for nginx.service under /etc in the last 7 days"."""
    out = ""
    for k, fmt in (("node", " on {}"), ("unit", " for {}"), ("package", " for package {}"), ("path", " under {}"),
                   ("user", " by {}"), ("text", ' mentioning "{}"')):
        if args.get(k):
            out += fmt.format(args[k])
    if args.get("since") is not None:
        out += f" in the last {_period(now - float(args['since']))}"
    return out


def reading(t: Template, args: dict[str, Any], now: float) -> str:
    """How the question was read, in words a person can check: which query, over what."""
    doc = t.doc.rstrip(".")
    return f"{t.title.lower()}{_scope(args, now)} ({doc[0].lower()}{doc[1:]})"


def alternatives(chosen: Template, ranked: list[tuple[Template, float]], found: dict[str, Any], now: float,
                 n: int = 2) -> list[str]:
    """The next readings as questions that are ready to run: each is checked to be read back as
    its own template (a suggestion that would only repeat this answer is no suggestion)."""
    out: list[str] = []
    for t, score in ranked[1:8]:
        if len(out) >= n or score <= 0 or t is chosen:
            continue
        if any(v == "!" and k not in found for k, v in t.params.items()):
            continue
        args = {k: found[k] for k in t.params if k in found and k != "since"}
        if "since" in t.params and "since" in found:
            args["since"] = now - float(found["since"])
        q = f"{t.title.lower()}{_scope(args, now)}"
        back = retrieve(q, extract(q, {}, now) | {k: v for k, v in found.items() if k in ("node", "unit", "package")})
        if back and back[0][0] is t:
            out.append(q)
    return out


def summarize(title: str, cols: list[str], rows: list[list], truncated: bool) -> str:
    if not rows:
        return f"{title}: nothing found."
    first = ", ".join(f"{c} {v}" for c, v in zip(cols, rows[0], strict=False) if v is not None)
    more = f" ({len(rows)}{'+' if truncated else ''} rows)" if len(rows) > 1 else ""
    return f"{title}: {first}{more}."
