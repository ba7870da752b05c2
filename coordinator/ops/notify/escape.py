"""Escaping by destination: text from orders, operators and gateways goes into WeCom
markdown, SMS bodies, HTML and log lines, and must stay text in each.

- WeCom markdown has no documented escape character, so markup characters are replaced
  by their full-width forms (they read the same to a person, mean nothing to the robot):
  a store name ``**Closed** <font color="info">`` cannot restyle or fake a message.
- SMS: no control characters or line breaks (a gateway may split on them), and a hard
  length limit: past it the body is cut with an ellipsis, never sent longer.
- HTML: the dashboard builds its page from DOM text nodes only (never ``innerHTML``), so
  the browser escapes; a test keeps it that way.
- Logs: control characters shown as escapes, so a payload cannot forge a log line.
"""

from __future__ import annotations

import re

# most SMS gateways refuse a body over 500 characters (about 7 segments of 70 CJK chars)
SMS_MAX_CHARS = 500
_WECOM_MARKUP = str.maketrans({
    "<": "＜", ">": "＞", "[": "［", "]": "］", "(": "（", ")": "）", "*": "＊",
    "`": "｀", "#": "＃", "~": "～", "|": "｜", "\\": "＼", "\r": " ", "\n": " ",
})
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def wecom_markdown(text: str) -> str:
    """Text safe inside a WeCom markdown message."""
    return _CONTROL.sub(" ", text.translate(_WECOM_MARKUP))


def sms_text(text: str) -> str:
    """One line of plain text for an SMS body or template parameter."""
    return " ".join(_CONTROL.sub(" ", text).split())


def sms_checked(body: str, max_chars: int = SMS_MAX_CHARS) -> str:
    """The body cut to ``max_chars`` (an ellipsis marks the cut)."""
    clean = sms_text(body)
    return clean if len(clean) <= max_chars else clean[: max_chars - 1] + "…"


def log_safe(text: str, max_chars: int = 300) -> str:
    """Untrusted text for a log line: control characters escaped, length bounded."""
    shown = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return shown if len(shown) <= max_chars else shown[:max_chars] + "..."
