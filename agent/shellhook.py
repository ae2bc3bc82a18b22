"""The bash and zsh snippets printed by ``homelab-agent shell-hook bash|zsh``.

Each finished interactive command is sent as one datagram to the agent's Unix socket by
util-linux ``logger`` (bash cannot write to a Unix socket by itself), started in the
background and disowned so the prompt never waits for it. ``--socket-errors=off`` keeps it
silent when the agent is not running. The agent takes the user and pid from the kernel
(SCM_CREDENTIALS), not from this payload, and redacts secrets before anything leaves the node.

Payload: ``HLC1`` then, separated by ASCII unit separators (0x1f): exit status, duration in
ms and start time in Unix microseconds (each empty if unknown), tty, shell, working
directory, and the command line (last, so it may contain anything, even the separator).

The hooks must never break a shell, so they:
- run only in interactive shells, once (sourcing twice is harmless), and only if logger exists;
- capture ``$?`` first and hand it back, so PS1 and later PROMPT_COMMAND entries see it;
- chain, never replace, an existing DEBUG trap and PROMPT_COMMAND (string or bash 5.1 array);
- reference every variable with a default (``set -u``) and let no command fail (``set -e``);
- fork nothing before a command runs; after it, one subshell that forks the background sender
  (which reads the history entry and execs logger) and exits, so the prompt waits for two forks.
"""

from __future__ import annotations

SEP = "\x1f"
MAGIC = "HLC1"

BASH = r"""# homelab-agent shell hook (bash): reports each command to the local agent.
# Install: homelab-agent shell-hook bash > /etc/profile.d/homelab-agent.sh  (or source it from ~/.bashrc)
if [[ $- == *i* && -z ${__hl_loaded:-} ]] && command -v logger >/dev/null 2>&1; then
__hl_loaded=1
__hl_sock=@SOCKET@
__hl_sep=$'\x1f'
__hl_tty=$(tty 2>/dev/null) || __hl_tty=
__hl_armed=
__hl_pending=
__hl_cmd=
__hl_cwd=
__hl_start=
__hl_prev_hc=$(( ${HISTCMD:-1} - 1 ))

__hl_preexec() {
  # Runs before every simple command; acts only on the first one after a prompt, and forks
  # nothing: the history entry is read later, in the background.
  if [[ ${__hl_armed:-} != 1 ]]; then : "${1:-}"; return 0; fi
  __hl_armed=
  if [[ ${BASH_COMMAND:-} == __hl_precmd* || -n ${COMP_LINE:-} ]]; then : "${1:-}"; return 0; fi
  local hc=${HISTCMD:-0}
  if [[ $hc == 0 || $hc == "${__hl_prev_hc:-}" ]]; then
    __hl_cmd=${BASH_COMMAND:-}  # not saved (ignoredups, history off): the command itself
  else
    __hl_cmd=  # the whole line is history entry $hc, the newest one
  fi
  __hl_prev_hc=$hc
  __hl_pending=1
  __hl_cwd=$PWD
  __hl_start=${EPOCHREALTIME:-}
  : "${1:-}"  # give $_ back to the command about to run
  return 0
}

__hl_send() {
  # In a background subshell: the history list is inherited, the prompt does not wait.
  local c=${__hl_cmd:-} h n
  if [[ -z $c ]]; then
    h=$(HISTTIMEFORMAT= builtin history 1 2>/dev/null) || h=
    h=${h#"${h%%[![:space:]]*}"}
    n=${h%%[!0-9]*}
    h=${h#"$n"}
    h=${h#\*}
    c=${h#"${h%%[![:space:]]*}"}
  fi
  [[ -n $c ]] || return 0
  exec logger -u "$__hl_sock" --socket-errors=off -S 65000 -t homelab-cmd -- \
    "HLC1${__hl_sep}${1}${__hl_sep}${2}${__hl_sep}${3}${__hl_sep}${__hl_tty}${__hl_sep}bash${__hl_sep}${__hl_cwd}${__hl_sep}${c}"
}

__hl_precmd() {
  local s=$?
  local last=$(( ${HISTCMD:-1} - 1 )) d= a= b
  if [[ -z ${__hl_pending:-} && $last -gt 0 && $last != "${__hl_prev_hc:-}" ]]; then
    # A saved command the DEBUG trap never saw (a subshell "( ... )" runs no trap here).
    __hl_prev_hc=$last
    __hl_pending=1 __hl_cmd= __hl_cwd=$PWD __hl_start=
    a=${EPOCHREALTIME//[!0-9]/}  # when it ended; how long it took is unknown
  fi
  if [[ -n ${__hl_pending:-} ]]; then
    if [[ -n ${__hl_start:-} && -n ${EPOCHREALTIME:-} ]]; then
      a=${__hl_start//[!0-9]/}
      b=${EPOCHREALTIME//[!0-9]/}
      d=$(( (10#$b - 10#$a) / 1000 ))
    fi
    # ( ... & ): no job notice, no "Done", and the user's $! is left alone
    ( __hl_send "$s" "$d" "$a" </dev/null >/dev/null 2>&1 & ) 2>/dev/null || :
    __hl_pending=
  fi
  [[ $- == *e* ]] && return 0  # under set -e a failing PROMPT_COMMAND would end the shell
  return $s
}

__hl_arm() {
  local s=$?
  __hl_armed=1
  [[ $- == *e* ]] && return 0
  return $s
}

__hl_prev_trap=$(trap -p DEBUG)
__hl_prev_trap=${__hl_prev_trap#"trap -- "}
__hl_prev_trap=${__hl_prev_trap%" DEBUG"}
if [[ -n $__hl_prev_trap ]]; then
  eval "__hl_prev_trap=$__hl_prev_trap"
  trap '[[ -z ${__hl_armed:-} ]] || __hl_preexec "$_"; '"$__hl_prev_trap" DEBUG
else
  # the test inline, not in the function: a loop typed at the prompt pays for a test per
  # command, not for a function call
  trap '[[ -z ${__hl_armed:-} ]] || __hl_preexec "$_"' DEBUG
fi

if [[ "$(declare -p PROMPT_COMMAND 2>/dev/null)" == "declare -a"* ]]; then
  PROMPT_COMMAND=(__hl_precmd "${PROMPT_COMMAND[@]}" __hl_arm)
else
  PROMPT_COMMAND="__hl_precmd${PROMPT_COMMAND:+
$PROMPT_COMMAND}
__hl_arm"
fi
__hl_armed=1
fi
"""

ZSH = r"""# homelab-agent shell hook (zsh): reports each command to the local agent.
# Install: homelab-agent shell-hook zsh >> ~/.zshrc  (or into /etc/zsh/zshrc.d)
if [[ -o interactive ]] && (( ! ${+__hl_loaded} )) && (( ${+commands[logger]} )); then
typeset -g __hl_loaded=1 __hl_sock=@SOCKET@ __hl_cmd= __hl_cwd= __hl_start= __hl_tty=${TTY:-}
zmodload zsh/datetime 2>/dev/null

__hl_preexec() {
  emulate -L zsh
  __hl_cmd=${1:-${3:-}}
  __hl_cwd=$PWD
  __hl_start=${EPOCHREALTIME:-}
  return 0
}

__hl_precmd() {
  local s=$?
  emulate -L zsh
  if [[ -n $__hl_cmd ]]; then
    local d= a=
    if [[ -n $__hl_start && -n ${EPOCHREALTIME:-} ]]; then
      d=$(( (EPOCHREALTIME - __hl_start) * 1000 ))
      d=${d%%.*}
      a=$(( __hl_start * 1000000 ))
      a=${a%%.*}
    fi
    command logger -u "$__hl_sock" --socket-errors=off -S 65000 -t homelab-cmd -- \
      "HLC1"$'\x1f'"${s}"$'\x1f'"${d}"$'\x1f'"${a}"$'\x1f'"${__hl_tty}"$'\x1f'"zsh"$'\x1f'"${__hl_cwd}"$'\x1f'"${__hl_cmd}" \
      </dev/null >/dev/null 2>&1 &!
    __hl_cmd=
  fi
  return $s
}

autoload -Uz add-zsh-hook
add-zsh-hook preexec __hl_preexec
add-zsh-hook precmd __hl_precmd
fi
"""

SHELLS = {"bash": BASH, "zsh": ZSH}


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def snippet(shell: str, socket_path: str) -> str:
    try:
        template = SHELLS[shell]
    except KeyError:
        raise ValueError(f"unknown shell {shell!r} (known: {', '.join(SHELLS)})") from None
    return template.replace("@SOCKET@", _quote(str(socket_path)))
