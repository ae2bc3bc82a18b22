"""Text from nodes, made safe to print on the administrator's terminal.

Node output (a check's stdout, a log line, an alert summary) can carry escape sequences
that retitle the window, clear the screen, move the cursor to overwrite what a person is
about to approve, or (OSC 52) write the clipboard; a carriage return or a bidi override can
make one text look like another. Everything but newline and tab is shown as a visible
``\\xNN`` / ``\\uNNNN`` escape instead.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(m: re.Match) -> str:
    n = ord(m.group())
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def clean(text: object) -> str:
    return _UNSAFE.sub(_visible, str(text))
