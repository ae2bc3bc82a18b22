"""Secret redaction for command lines, applied on the node before anything is stored or sent.

``redact(text)`` returns the text with secret values replaced by ``[REDACTED]`` and whether
anything was replaced. What is kept is everything a person needs to understand the command
(program, options, user names, hosts, paths); what goes is the value itself:

- private key blocks (``-----BEGIN ... PRIVATE KEY-----``), keeping the markers;
- credentials in URLs (``scheme://user:PASS@host``) and secret query parameters;
- secret HTTP headers (``Authorization``, ``Cookie``, ``X-Api-Key``, ``PRIVATE-TOKEN`` ...);
- well-known token formats wherever they appear (AWS, GitHub, GitLab, Slack, Stripe, Google,
  OpenAI/Anthropic, npm, PyPI, Hugging Face, Tailscale, DigitalOcean, SendGrid, Docker Hub,
  Vault, Grafana, age, JWTs, and this project's own ``hlj_``/``hln_`` tokens);
- values of secret-looking options (``--password X``, ``--token=X``, ``--api-key X`` ...),
  program-specific short options (``mysql -pX``, ``sshpass -p X``, ``curl -u user:X``,
  ``redis-cli -a X``, ``ldapsearch -w X``, ``docker login -p X``, ``smbclient -U user%X``,
  ``htpasswd -b FILE USER X``, ``openssl -passin pass:X``, ``nmcli ... password X``,
  ``wpa_passphrase SSID X``, ``vault login X``, ``echo X | chpasswd/passwd --stdin/sudo -S``);
- values of secret-looking assignments (``export API_TOKEN=X``, ``PGPASSWORD=X cmd``,
  ``-e DB_PASSWORD=X``, ``--from-literal=password=X``) and JSON fields (``"password": "X"``).

A value is a whole shell word whatever its quoting ('x', "x", $'x', "pre"'x', \"x\" inside a
nested ``sh -c "..."``); a value that is a command printing a literal (``"$(echo X)"``,
``BORG_PASSCOMMAND='echo X'``, ``--password-command 'printf X'``) is masked as a whole.

Deliberately kept: references rather than values (``$TOKEN``, ``$(pass show x)``), options
that name a file or a prompt (``--password-file``, ``--password-stdin``, ``mysql -p``
alone), ports (``docker run -p 8080:80``, ``ssh -p 2222``), and ``git@host:repo`` addresses.

This is a best effort over text, not a guarantee: a secret typed as a bare argument to an
unknown program cannot be told from any other word. The patterns are linear-time (no nested
quantifiers) so hostile input cannot make the agent spin.
"""

from __future__ import annotations

import re
from collections.abc import Callable

MASK = "[REDACTED]"

# A shell word as a value, up to whitespace or a shell operator. Possessive: once a word is
# read it is never re-split, so the patterns stay linear on hostile input.
_SUBST = "|".join((
    r"""\$'(?:[^'\\\n]|\\.)*'""",  # $'ANSI-C'
    r'''\$"(?:[^"\\\n]|\\.)*"''',  # $"locale"
    r"""\$\((?:[^()\n]|\([^()\n]*\))*\)""",  # $(command), one level of nested parentheses
    r"""`[^`\n]*`""",  # `command`
))
_QUOTED = "|".join((
    r"""'[^'\n]*'""",  # 'single'
    r'''"(?:[^"\\\n]|\\.)*"''',  # "double"
    r'''\\"(?:[^"\\\n]|\\[^"\n])*\\"''',  # \"quoted\" inside a double-quoted command
    _SUBST,
))
_PLAIN = r"""(?:[^\s;&|)<>'"\\`$]|\\.|\$(?![('"]))++"""
# Quoted parts may follow each other ("pre"'x'); after plain characters a quote ends the word,
# as it would inside a quoted command (-b 'a=b; token=x' -H ...): ab'cd' masks only ab.
_VAL = rf"(?:(?:{_QUOTED})++(?:{_PLAIN})?|{_PLAIN}(?:{_SUBST})*+)"

# Secret-looking names, judged word by word (API_TOKEN, apiKey, db-password, PGPASSWORD):
# a word that ends in one of _LONG, or is one of _SHORT, or a last word "key" after another
# word; unless the last word says the value is not the secret itself (a file, an id, a url).
_LONG = ("password", "passwords", "passwd", "passphrase", "secret", "secrets", "token", "tokens",
         "apikey", "credential", "credentials")
_SHORT = {"pass", "pwd", "pw", "auth", "cred", "creds", "sas", "dsn", "psk", "cookie", "pat", "bearer"}
# Values that are settings, not secrets (PasswordAuthentication=no, --auth=none).
_NOT_SECRET_VALUES = {"yes", "no", "true", "false", "on", "off", "none", "null", "0", "1", "required",
                      "optional", "disabled", "enabled", "prompt", "ask", "-"}
_NOT_SECRET = {
    "file", "files", "path", "dir", "id", "name", "url", "uri", "host", "user", "username", "type",
    "length", "size", "ttl", "region", "enabled", "algorithm", "command", "cmd", "prompt", "stdin",
    "env", "policy", "header", "mode", "method", "expiry", "expires", "timeout", "version",
    "count", "port", "endpoint", "helper", "store", "location", "fd", "hash", "format", "option",
    "options", "from", "source",
}
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z0-9]+(?![a-z])")


def secret_name(name: str) -> bool:
    """Whether a variable/option/field name says its value is a secret."""
    words = [w.lower() for w in _WORDS.findall(name)]
    if not words or words[-1] in _NOT_SECRET or name in ("PWD", "OLDPWD"):
        return False
    if words[0] in ("ask", "no", "prompt", "with", "use", "show", "print", "reset", "change"):
        return False
    for w in words:
        if w in _SHORT or w.endswith(_LONG):
            return True
    return len(words) >= 2 and words[-1] in ("key", "keys")


Rule = tuple[re.Pattern, Callable[[re.Match], str]]


def _keep_groups_mask(*mask_groups: int) -> Callable[[re.Match], str]:
    """Replace the given groups of the match with MASK, keep the rest of the match."""

    def sub(m: re.Match) -> str:
        out, pos = [], m.start()
        for g in sorted(mask_groups):
            if m.start(g) < 0:
                continue
            out.append(m.string[pos:m.start(g)])
            out.append(_mask_value(m.group(g)))
            pos = m.end(g)
        out.append(m.string[pos:m.end()])
        return "".join(out)

    return sub


def _mask_value(v: str) -> str:
    """Mask a value, keeping its quotes so the command still reads as shell."""
    if len(v) >= 4 and v.startswith('\\"') and v.endswith('\\"'):
        return '\\"' + MASK + '\\"'
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        return v[0] + MASK + v[0]
    return MASK


def _is_path(v: str) -> bool:
    return v.strip("'\"").startswith(("/", "~/", "./", "../"))


# A command whose output is the value: `echo X`, printf, a here-string. Its words are the
# secret itself; any other command ($(pass show x), $(cat FILE)) is a reference to one.
_ECHOES = re.compile(r"""^["'\\]*(?:\$\(|`)?\s*(?:builtin\s+)?(?:(?:echo|printf)\b|cat\s*<<<)""")


def _is_reference(v: str) -> bool:
    if _ECHOES.match(v):
        return False
    v = v.strip("'\"\\")
    if v.startswith(("$'", '$"')):  # $'...' is a quoted literal, not a variable
        return False
    return (v.startswith("$") or v == "" or v == MASK or v.startswith("<(")
            or v.lower() in _NOT_SECRET_VALUES)


def _secret_command(name: str) -> bool:
    """BORG_PASSCOMMAND, --password-command: the value is a command that prints the secret."""
    words = [w.lower() for w in _WORDS.findall(name)]
    if not words:
        return False
    if words[-1] in ("passcommand", "passcmd", "passwordcommand"):
        return True
    return words[-1] in ("command", "cmd") and any(w in _SHORT or w.endswith(_LONG) for w in words[:-1])


_ASSIGN = re.compile(rf"(?<![\w.-])(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)=(?P<value>{_VAL})")
_ASSIGN_IN_LIST = re.compile(r"(?<![\w.-])(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)=(?P<value>[^\s;&|)<>'\",]+)")


def _assign(m: re.Match) -> str:
    name, value = m.group("name"), m.group("value")
    head = m.group(0)[: m.start("value") - m.start()]
    if _secret_command(name) and _ECHOES.match(value):
        return head + _mask_value(value)
    if not secret_name(name):
        # "username=bob,password=x": the next assignment hides inside this value
        # (inside such a list values end at commas, as mount options and the like do)
        return head + _ASSIGN_IN_LIST.sub(_assign, value) if "=" in value else m.group(0)
    if _is_reference(value) or _is_path(value):
        return m.group(0)
    return head + _mask_value(value)


def _url(m: re.Match) -> str:
    user, _, pw = m.group("userinfo").partition(":")
    if not pw or pw == MASK:
        return m.group(0)
    return f"{m.group('scheme')}{user}:{MASK}@"


def _option(m: re.Match) -> str:
    value = m.group("value")
    if _secret_command(m.group("opt")) and _ECHOES.match(value):
        return m.group(0)[: m.start("value") - m.start()] + _mask_value(value)
    if (not secret_name(m.group("opt")) or _is_reference(value) or _is_path(value)
            or (m.group("sep") != "=" and value.startswith("-"))):
        return m.group(0)
    return m.group(0)[: m.start("value") - m.start()] + _mask_value(value)


_TOKENS = [
    r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}\b",  # AWS key ids
    r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b",  # GitHub
    r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
    r"\bgl(?:pat|ptt|dt|rt|cbt|oas|ft|imt|agent)-[A-Za-z0-9_-]{20,}",  # GitLab
    r"\bxox[abposre]-[A-Za-z0-9-]{10,}",  # Slack tokens
    r"\bxapp-\d-[A-Za-z0-9-]{10,}",
    r"(?<=hooks\.slack\.com/services/)[A-Za-z0-9/]{20,}",  # Slack webhooks
    r"(?<=/api/webhooks/)\d+/[A-Za-z0-9_-]{20,}",  # Discord webhooks
    r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe
    r"\bwhsec_[A-Za-z0-9]{20,}",
    r"\bAIza[0-9A-Za-z_-]{35}\b",  # Google API key
    r"\bya29\.[0-9A-Za-z_-]{20,}",  # Google OAuth access token
    r"\bsk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",  # OpenAI, Anthropic
    r"\bnpm_[A-Za-z0-9]{36}\b",
    r"\bpypi-[A-Za-z0-9_-]{50,}",
    r"\bhf_[A-Za-z0-9]{30,}\b",  # Hugging Face
    r"\btskey-[A-Za-z0-9-]{10,}",  # Tailscale
    r"\bdo[por]_v1_[a-f0-9]{64}\b",  # DigitalOcean
    r"\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}",  # SendGrid
    r"\bdckr_pat_[A-Za-z0-9_-]{20,}",  # Docker Hub
    r"\bhv[sbr]\.[A-Za-z0-9_-]{20,}",  # HashiCorp Vault
    r"\bgl(?:sa|c)_[A-Za-z0-9_=+/-]{20,}",  # Grafana
    r"\bAGE-SECRET-KEY-1[0-9A-Z]{58}\b",  # age
    r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWT
    r"\bhl[jn]_[A-Za-z0-9_-]{20,}",  # this project's join tokens and node credentials
    r"(?<=\bbot)\d{6,12}:[A-Za-z0-9_-]{30,}",  # Telegram bot tokens (api.telegram.org/bot<token>/)
    r"(?<=webhook\.office\.com/webhookb2/)[A-Za-z0-9@/-]{20,}",  # Teams webhooks
]

RULES: list[Rule] = [
    # private key blocks (an unterminated one is masked to the end)
    (re.compile(r"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----)(.*?)(-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|\Z)",
                re.S),
     lambda m: m.group(1) + MASK + m.group(4)),
    # scheme://user:password@host (the userinfo runs to the last @ before the path)
    (re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]{1,20}://)(?P<userinfo>[^/\s'\"@]*(?:@[^/\s'\"@]*)*)@(?=[^\s@/'\"]*)"),
     _url),
    # secret query parameters
    (re.compile(r"(?i)[?&;](?:access_token|id_token|refresh_token|token|api_key|apikey|key|password|"
                r"passwd|pass|secret|client_secret|sig|signature|auth|X-Amz-Signature|X-Amz-Security-Token|"
                r"X-Goog-Signature)=(?P<v>[^&\s'\"#]+)"),
     _keep_groups_mask(1)),
    # HTTP headers carrying a secret: keep the scheme word (Bearer/Basic), mask the credential
    (re.compile(r"(?i)\b(?:proxy-)?authorization\s*:\s*['\"]?(?:(?:bearer|basic|token|digest|negotiate|apikey|"
                r"key|sso-key|otp)\s+)?(?P<v>[^\s'\"]+(?:[ \t]+[^\s'\"]+)*)"),
     lambda m: m.group(0) if m.group("v").split()[-1].startswith("$") else _keep_groups_mask(1)(m)),
    (re.compile(r"(?i)\b(?:cookie|set-cookie|x-api-key|api-key|apikey|x-auth-token|x-access-token|"
                r"private-token|job-token|x-vault-token|x-github-token|x-gitlab-token|x-consul-token|"
                r"x-nomad-token|x-goog-api-key|ocp-apim-subscription-key)\s*:\s*(?P<v>[^'\"\n]+)"),
     _keep_groups_mask(1)),
    *[(re.compile(p), lambda m: MASK) for p in _TOKENS],
    # --password X, --token=X, --api-key "X" ... (see _option for what is left alone)
    (re.compile(rf"(?<![\w-])--(?P<opt>[A-Za-z0-9][A-Za-z0-9_-]*)(?P<sep>=|[ \t]+(?=[^-\s]))(?P<value>{_VAL})"),
     _option),
    # java -Dsome.keyStorePassword=X (the name follows -D directly)
    (re.compile(rf"(?<=\s-D)(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)=(?P<value>{_VAL})"), lambda m: _assign(m)),
    # keytool -storepass X -keypass X
    (re.compile(rf"\s-(?:src|dest)?(?:store|key)pass\s+(?P<v>(?!:){_VAL})"), _keep_groups_mask(1)),
    # az login -p X, mosquitto_pub -P X, zip/unzip -P X, 7z -pX
    (re.compile(rf"\baz\s+login\b[^|;&\n]*?\s-p\s+(?P<v>{_VAL})"), _keep_groups_mask(1)),
    (re.compile(rf"\b(?:mosquitto_pub|mosquitto_sub|mosquitto_rr|zip|unzip|zipcloak)\b[^|;&\n]*?\s-P\s+(?P<v>{_VAL})"),
     _keep_groups_mask(1)),
    (re.compile(rf"\b(?:7z|7za|7zr)\b[^|;&\n]*?\s-p(?P<v>(?!\s){_VAL})"), _keep_groups_mask(1)),
    # mc alias set NAME URL ACCESS_KEY SECRET_KEY (both keys), rclone obscure X
    (re.compile(rf"\bmc\s+(?:alias|config\s+host)\s+(?:set|add)\s+\S+\s+\S+\s+(?P<a>{_VAL})\s+(?P<v>{_VAL})"),
     _keep_groups_mask(1, 2)),
    (re.compile(rf"\brclone\s+obscure\s+(?P<v>{_VAL})"), _keep_groups_mask(1)),
    # aws/gcloud/git config set NAME VALUE, when NAME is secret-looking
    (re.compile(rf"\b(?:aws\s+configure\s+set|gcloud\s+config\s+set|git\s+config(?:\s+--\S+)*|"
                rf"npm\s+config\s+set|yarn\s+config\s+set|pip\s+config\s+set)\s+(?P<name>[\w.:/-]+)\s+(?P<value>{_VAL})"),
     lambda m: _assign(m)),
    # openssl passwd X, mkpasswd [-m M] X, chpasswd/passwd --stdin <<< X
    (re.compile(rf"\bopenssl\s+passwd\b(?:\s+-(?:salt\s+\S+|\S+))*\s+(?P<v>(?!-){_VAL})"), _keep_groups_mask(1)),
    (re.compile(rf"\bmkpasswd\b(?:\s+-[mSRP]\s*\S+|\s+--\S+)*\s+(?P<v>(?!-){_VAL})"), _keep_groups_mask(1)),
    (re.compile(rf"\b(?:chpasswd|passwd\b[^|;&\n]*--stdin)[^|;&\n]*<<<\s*(?P<v>{_VAL})"), _keep_groups_mask(1)),
    # ipmitool/sqlcmd -P X, rdesktop -p X, xfreerdp /p:X, snmp* -c COMMUNITY -A/-X passphrases
    (re.compile(rf"\b(?:ipmitool|sqlcmd|bcp)\b[^|;&\n]*?\s-P\s*(?P<v>{_VAL})"), _keep_groups_mask(1)),
    (re.compile(rf"\brdesktop\b[^|;&\n]*?\s-p\s*(?P<v>{_VAL})"), _keep_groups_mask(1)),
    (re.compile(r"\b(?:xfreerdp|wlfreerdp|sdl-freerdp)\b[^|;&\n]*?\s[/+]p:(?P<v>[^\s]+)"), _keep_groups_mask(1)),
    (re.compile(rf"\bsnmp[a-z]*\b[^|;&\n]*?\s-[cAX]\s*(?P<v>{_VAL})"), _keep_groups_mask(1)),
    # YAML-style "password: X" (only strong names: "token: fix" in a commit message stays)
    (re.compile(rf"(?i)(?<![\w-])[\w.-]*(?:password|passwd|passphrase|secret|api_?key|access_?token|auth_?token|"
                rf"private_?key|client_?secret)[\w.-]*\s*:\s+(?P<v>(?!\[REDACTED\]){_VAL})"),
     _keep_groups_mask(1)),
    # .netrc lines: machine HOST login USER password X
    (re.compile(rf"\bmachine\s+\S+[^\n]*?\bpassword\s+(?P<v>{_VAL})"), _keep_groups_mask(1)),
    # mysql family: -pSECRET (attached only: a separate word after -p is the database name)
    (re.compile(rf"\b(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlshow|mysqlcheck|mysqlpump|mariadb|"
                rf"mariadb-dump|mariadb-admin)\b[^|;&\n]*?\s-p(?P<v>(?!\s){_VAL})"),
     _keep_groups_mask(1)),
    # sshpass -p X / -pX
    (re.compile(rf"\bsshpass\b[^|;&\n]*?\s-p\s*(?P<v>{_VAL})"), _keep_groups_mask(1)),
    # curl/wget-style user:password (-u, --user, --proxy-user, -U)
    (re.compile(r"\b(?:curl|wget|xh|https?|lftp|aria2c)\b[^|;&\n]*?(?:\s-[uUa]|\s--(?:proxy-|http-)?user|\s--auth)"
                r"(?:=|\s+|(?=['\"]))(?P<q>['\"]*)[^:\s'\"]*:(?P<v>[^\s'\"]+)"),
     _keep_groups_mask(2)),
    # redis-cli -a X
    (re.compile(rf"\bredis-cli\b[^|;&\n]*?\s-a\s+(?P<v>{_VAL})"), _keep_groups_mask(1)),
    # ldap tools -w X
    (re.compile(rf"\bldap[a-z]*\b[^|;&\n]*?\s-w\s+(?P<v>{_VAL})"), _keep_groups_mask(1)),
    # docker/podman/helm/... login -p X
    (re.compile(rf"\b(?:docker|podman|nerdctl|buildah|skopeo|helm|oras|crane)\b[^|;&\n]*?\blogin\b[^|;&\n]*?\s-p\s+(?P<v>{_VAL})"),
     _keep_groups_mask(1)),
    # smbclient/rpcclient/mount.cifs -U user%password, password=X in mount options
    (re.compile(r"(?:\s-U\s*|\s--user=|\busername=)['\"]?[^%\s'\"]+%(?P<v>[^\s'\"]+)"), _keep_groups_mask(1)),
    # htpasswd -b[flags] FILE USER PASSWORD
    (re.compile(rf"\bhtpasswd\s+(?:-[a-zA-Z]*b[a-zA-Z]*\s+)(?:-\S+\s+)*\S+\s+\S+\s+(?P<v>{_VAL})"),
     _keep_groups_mask(1)),
    # openssl -pass/-passin/-passout pass:X, openssl enc -k X
    (re.compile(r"\bpass:(?P<v>[^\s'\"]+)"), _keep_groups_mask(1)),
    (re.compile(rf"\bopenssl\b[^|;&\n]*?\s-k\s+(?P<v>{_VAL})"), _keep_groups_mask(1)),
    # nmcli ... password X / wifi-sec.psk X / 802-1x.password X
    (re.compile(rf"\bnmcli\b[^|;&\n]*?\s(?:password|[\w-]*\.psk|[\w-]*\.password)\s+(?P<v>{_VAL})"),
     _keep_groups_mask(1)),
    # wpa_passphrase SSID PASSPHRASE
    (re.compile(rf"\bwpa_passphrase\s+{_VAL}\s+(?P<v>{_VAL})"), _keep_groups_mask(1)),
    # vault login TOKEN, vault token ... (a positional token)
    (re.compile(rf"\bvault\s+login\s+(?:-\S+\s+)*(?P<v>(?![-]){_VAL})"), _keep_groups_mask(1)),
    # echo X | chpasswd, echo X | passwd --stdin, echo X | sudo -S, printf ... | ...
    (re.compile(rf"\b(?:echo|printf)\s+(?:-[neE]+\s+)*(?P<v>{_VAL})\s*\|\s*(?:sudo\s+(?:-\S+\s+)*)?"
                r"(?:chpasswd|passwd\b[^|;&\n]*--stdin|sudo\s+(?:-\S+\s+)*-S|[\w.-]+\s+[^|;&\n]*--password-stdin|[\w.-]+\s+[^|;&\n]*--with-token|kinit|cryptsetup)"),
     _keep_groups_mask(1)),
    # sudo -S <<< 'pw'
    (re.compile(rf"\bsudo\s+(?:-\S+\s+)*-S\b[^;&|\n]*<<<\s*(?P<v>{_VAL})"), _keep_groups_mask(1)),
    # JSON: "password": "X"
    (re.compile(r"""(?P<q>\\?["'])(?P<name>[\w.-]{1,64})(?P=q)\s*:\s*(?P<value>\\?"(?:[^"\\]|\\[^"])*\\?"|'[^']*')"""),
     _assign),
    # NAME=VALUE (export, env, set -x, docker -e, --from-literal=..., mount -o password=...)
    (_ASSIGN, _assign),
    # fish/csh: set -x NAME VALUE, setenv NAME VALUE
    (re.compile(rf"\b(?:set\s+-[a-zA-Z]*x[a-zA-Z]*|setenv)\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s+(?P<value>{_VAL})"),
     _assign),
]


def redact(text: str) -> tuple[str, bool]:
    """(text with secrets masked, whether anything was masked)."""
    out = text
    for pattern, sub in RULES:
        out = pattern.sub(sub, out)
    return out, out != text
