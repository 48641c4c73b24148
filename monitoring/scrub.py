"""Masking of secrets and card numbers in anything written out: log lines, errors, API answers.

The secrets are the configured ones (API keys, webhook secret, signing keys, the service
account's private key), read from the settings so that a key set at run time is masked too.
Card numbers are runs of 13-19 digits (spaces or dashes allowed) that pass the Luhn check.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.conf import settings

SECRET_SETTINGS = (
    "SECRET_KEY",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "SENDGRID_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "METRICS_TOKEN",
)
MASK = "[redacted]"
CARD_MASK = "[card]"
_CARD = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])")
# Anything that looks like a provider key, even one that is not configured here.
_KEY_SHAPES = re.compile(
    r"\b(?:sk_(?:live|test)_[A-Za-z0-9_]{4,}|rk_(?:live|test)_[A-Za-z0-9_]{4,}|whsec_[A-Za-z0-9_]{4,}"
    r"|SG\.[A-Za-z0-9_.-]{6,})"
)
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)
_cache: dict[tuple[str, ...], list[str]] = {}


def _secrets() -> list[str]:
    values = (
        *tuple(str(getattr(settings, name) or "") for name in SECRET_SETTINGS),
        str(settings.SIMPLE_JWT["SIGNING_KEY"] or ""),
        _service_account_key(),
    )
    found = _cache.get(values)
    if found is None:
        # Long ones first, so a secret containing another is masked whole; very short values
        # (a test's "x") would mask ordinary words, so they are left out.
        found = sorted({v for v in values if len(v) >= 6}, key=len, reverse=True)
        _cache.clear()
        _cache[values] = found
    return found


def _service_account_key() -> str:
    raw = settings.GOOGLE_SERVICE_ACCOUNT_JSON
    if not raw:
        return ""
    try:
        return str(json.loads(raw).get("private_key", ""))
    except (ValueError, AttributeError):
        return raw


def _luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return CARD_MASK if 13 <= len(digits) <= 19 and _luhn(digits) else match.group(0)


def scrub(text: str) -> str:
    """`text` with every configured secret, key-shaped string and card number masked."""
    if not text:
        return text
    for secret in _secrets():
        if secret in text:
            text = text.replace(secret, MASK)
    text = _PRIVATE_KEY.sub(MASK, text)
    text = _KEY_SHAPES.sub(MASK, text)
    return _CARD.sub(_card, text)


def scrub_value(value: Any) -> Any:
    """`scrub` through strings, lists and dicts (for JSON answers)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_value(v) for v in value]
    return value
