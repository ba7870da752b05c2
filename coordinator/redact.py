"""Secrets never leave: the one place that knows what a secret looks like in text.

Webhook URLs carry their key in the query (WeCom: ``...send?key=<key>``) or the user
info, SMS gateways take an API key, webhooks custom headers, brokers passwords. Anything
that could carry one (an error of an HTTP call, an answer echoed by a gateway, a log
line) goes through :func:`redact` with the secrets of that destination before it is
stored, logged or returned.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

MASK = "***"
# shorter strings could be ordinary words; real keys are far longer
MIN_SECRET_LEN = 6


def url_secrets(url: str | None) -> list[str]:
    """The secret parts of a URL: every query value and the user-info password."""
    if not url:
        return []
    parts = urlsplit(url)
    found = [value for _, value in parse_qsl(parts.query, keep_blank_values=False)]
    if parts.password:
        found.append(parts.password)
    return found


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each secret (also URL-encoded) replaced by ``***``."""
    out = text
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LEN},
                         key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            out = out.replace(form, MASK)
    return out


def safe_url(url: str) -> str:
    """A URL fit for an error message: query values and the password masked."""
    return redact(url, url_secrets(url))


def header_secrets(headers: Mapping[str, str]) -> list[str]:
    """Custom headers of a webhook are credentials (``X-Token``, ``Authorization``)."""
    found = []
    for value in headers.values():
        found.append(value)
        scheme, _, credential = value.partition(" ")
        if credential and scheme.lower() in ("bearer", "basic", "token"):
            found.append(credential)
    return found


class RedactingFilter(logging.Filter):
    """For loggers of libraries that log what they send (httpx logs every request URL
    at INFO, a WeCom key included): the record's text with the secrets masked."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = redact(text, self.secrets)
        if clean != text:
            record.msg, record.args = clean, None
        return True


# the libraries whose log lines carry request URLs
URL_LOGGERS = ("httpx", "httpcore")
