"""Categories and tags for knowledge-base documents.

Without a model the category comes from a multinomial naive Bayes classifier trained on
the documents whose category a person set (``kb set-category``) or the source declared
(front matter ``category:``, ``kb add --category``), as paperless-ngx does. Until there are
enough examples, keyword rules decide (the cold start); their scores also act as a weak
prior for the learned model so a handful of examples cannot overrule an obvious title.
Automatic choices are never used as training data: the classifier must not learn from
its own guesses.

With a model, the brain may register a chooser with ``set_model_chooser``; it gets the
title, the text and the allowed categories and returns one of them or None (then the
classifier decides). Nothing here imports the brain.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

DEFAULT_CATEGORIES = ("hardware", "networking", "storage", "services", "security", "how-to",
                      "snippet", "note")
MIN_EXAMPLES = 8  # fewer training documents than this: keyword rules decide
RULE_WEIGHT = 1.0  # weight of the keyword rules' share of points next to the learned score

_STOP = frozenset("""a an and are as at be by for from has have how i if in into is it its
of on or our so that the their then there these this to was we were what when where which
who why will with you your can do does not no yes use used using run via all any but my me
""".split())
_TOKEN = re.compile(r"[a-z][a-z0-9_+.-]{1,30}")


def tokens(text: str) -> list[str]:
    return [t.strip(".-") for t in _TOKEN.findall(text.lower()) if t not in _STOP]


# Cold-start rules: keyword -> category; a title hit counts three times a body hit.
KEYWORDS: dict[str, tuple[str, ...]] = {
    "hardware": ("cpu", "ram", "memory", "dimm", "motherboard", "bios", "uefi", "psu", "fan",
                 "temperature", "sensors", "smart", "gpu", "ups", "nvme", "sata", "ecc", "raspberry",
                 "firmware", "lm-sensors", "thermal", "hardware", "power", "watt", "ipmi", "idrac"),
    "networking": ("network", "dns", "dhcp", "vlan", "router", "switch", "firewall", "wireguard",
                   "tailscale", "ip", "subnet", "gateway", "mtu", "ethernet", "wifi", "nftables",
                   "iptables", "bridge", "interface", "route", "unbound", "pihole", "port", "tcp",
                   "udp", "nic", "netplan", "bond", "lacp"),
    "storage": ("zfs", "zpool", "raid", "mdadm", "disk", "disks", "btrfs", "ext4", "nfs", "smb",
                "samba", "snapshot", "backup", "restic", "borg", "mount", "fstab", "lvm", "ssd", "hdd",
                "scrub", "dataset", "nas", "partition", "filesystem", "storage", "rsync", "truenas"),
    "services": ("docker", "compose", "container", "systemd", "service", "unit", "nginx", "caddy",
                 "traefik", "postgres", "mysql", "redis", "jellyfin", "plex", "nextcloud", "grafana",
                 "prometheus", "home-assistant", "homeassistant", "proxmox", "vm", "lxc", "kubernetes",
                 "k3s", "journald", "cron", "timer", "app", "server", "immich", "gitea"),
    "security": ("ssh", "key", "keys", "certificate", "tls", "ssl", "letsencrypt", "acme", "fail2ban",
                 "password", "secret", "secrets", "vault", "gpg", "auth", "2fa", "totp", "cve",
                 "audit", "permissions", "sudo", "hardening", "crowdsec", "security", "attack", "ban"),
    "how-to": ("how", "runbook", "steps", "step", "procedure", "guide", "install", "setup",
               "replace", "upgrade", "migrate", "recover", "restore", "fix", "troubleshoot", "checklist"),
    "snippet": ("snippet", "script", "bash", "function", "oneliner", "one-liner", "alias", "jq", "awk",
                "sed", "regex"),
    "note": ("note", "notes", "idea", "ideas", "todo", "journal", "log", "meeting", "thoughts",
             "wishlist", "plan", "inventory", "shopping", "diary", "decision"),
}


def rule_scores(title: str, text: str, kind: str, categories: Sequence[str]) -> dict[str, float]:
    scores = dict.fromkeys(categories, 0.0)
    t_title = Counter(tokens(title))
    t_body = Counter(tokens(text[:20000]))
    for cat in categories:
        for kw in KEYWORDS.get(cat, ()):
            scores[cat] += 3 * t_title.get(kw, 0) + min(t_body.get(kw, 0), 3)
    if "how-to" in scores and re.match(r"\s*(how\s+to|runbook|guide)\b", title, re.I):
        scores["how-to"] += 6
    return scores


@dataclass
class Model:
    """Multinomial naive Bayes over tokens with Laplace smoothing."""

    doc_counts: Counter
    token_counts: dict[str, Counter]
    totals: dict[str, int]
    vocab: int
    examples: int
    words: frozenset = frozenset()

    @classmethod
    def train(cls, examples: Iterable[tuple[str, str]]) -> Model:
        docs: Counter = Counter()
        toks: dict[str, Counter] = {}
        vocab: set[str] = set()
        for category, text in examples:
            docs[category] += 1
            c = toks.setdefault(category, Counter())
            ts = tokens(text)
            c.update(ts)
            vocab.update(ts)
        return cls(docs, toks, {k: sum(v.values()) for k, v in toks.items()}, len(vocab) or 1,
                   sum(docs.values()), frozenset(vocab))

    def usable(self) -> bool:
        return self.examples >= MIN_EXAMPLES and len(self.doc_counts) >= 2

    def scores(self, text: str, categories: Sequence[str]) -> dict[str, float]:
        """Mean log-likelihood per distinct known word. Distinct words and the mean (rather
        than the sum) keep long documents from drowning the keyword prior; words never seen
        in training say nothing about any class and would only favour classes with little
        text, so they are left out."""
        words = {t for t in tokens(text) if t in self.words}
        out = {}
        for cat in categories:
            c = self.token_counts.get(cat, Counter())
            denom = math.log(self.totals.get(cat, 0) + self.vocab)
            ll = sum(math.log(c.get(t, 0) + 1) - denom for t in words)
            out[cat] = ll / len(words) if words else 0.0
        return out


def training_text(title: str, text: str) -> str:
    return f"{title}\n{title}\n{title}\n{text[:20000]}"  # titles say the most about a note


_CACHE: dict[tuple, Model] = {}


def load_model(db: sqlite3.Connection) -> Model:
    """The learned model for this database, rebuilt only when the training data changed."""
    name = db.execute("PRAGMA database_list").fetchone()[2]
    key = (name, *db.execute("SELECT count(*), max(id), max(created) FROM kb_training").fetchone())
    model = _CACHE.get(key)
    if model is None:
        model = Model.train((r[0], r[1]) for r in db.execute("SELECT category, text FROM kb_training"))
        if len(_CACHE) > 16:
            _CACHE.clear()
        _CACHE[key] = model
    return model


ModelChooser = Callable[[str, str, Sequence[str]], "str | None"]
_chooser: ModelChooser | None = None


def set_model_chooser(fn: ModelChooser | None) -> None:
    """The brain's hook: fn(title, text, categories) -> category or None."""
    global _chooser
    _chooser = fn


def choose(title: str, text: str, kind: str, categories: Sequence[str], model: Model | None,
           use_rules: bool = True, use_chooser: bool = True) -> tuple[str, str]:
    """(category, how it was chosen: model | learned | rules | default)."""
    if _chooser is not None and use_chooser:
        picked = _chooser(title, text, categories)
        if picked is not None and picked in categories:
            return picked, "model"
    if kind == "code" and "snippet" in categories:
        return "snippet", "rules"  # a code file is a snippet whatever it talks about
    rules = rule_scores(title, text, kind, categories) if use_rules else dict.fromkeys(categories, 0.0)
    # Only categories with examples compete in the learned model: an empty class would win
    # every unseen word (its smoothed likelihood is flatter), not a real preference.
    trained = [c for c in categories if model is not None and model.doc_counts.get(c)]
    if model is not None and model.usable() and len(trained) >= 2:
        learned = model.scores(training_text(title, text), trained)
        total = sum(rules.values()) or 1.0
        best = max(trained, key=lambda c: learned[c] + RULE_WEIGHT * rules[c] / total)
        return best, "learned"
    if max(rules.values(), default=0) > 0:
        return max(categories, key=lambda c: rules[c]), "rules"
    return ("note" if "note" in categories else categories[0]), "default"


# Names worth a tag when a document is about them (title hit or mentioned repeatedly).
TOOLS = frozenset("""zfs btrfs mdadm lvm nfs samba smb restic borg rsync docker podman compose
kubernetes k3s proxmox lxc systemd nginx caddy traefik haproxy postgres postgresql mysql mariadb
redis sqlite grafana prometheus alertmanager loki jellyfin plex nextcloud immich gitea
home-assistant homeassistant mqtt zigbee wireguard tailscale openvpn unbound pihole pi-hole
dnsmasq bind nftables iptables ufw fail2ban crowdsec letsencrypt certbot ssh gpg vault ansible
terraform cron smartctl nvme ups nut ipmi truenas unifi opnsense pfsense vlan dhcp dns raspberry
python bash jq awk""".split())


def auto_tags(title: str, text: str, limit: int = 6) -> list[str]:
    t_title = set(tokens(title))
    body = Counter(tokens(text[:20000]))
    hits = [(3 * (t in t_title) + body.get(t, 0), t) for t in TOOLS if t in t_title or body.get(t, 0) >= 2]
    return [t for _, t in sorted(hits, key=lambda x: (-x[0], x[1]))[:limit]]
