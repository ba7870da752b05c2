"""Personal data rules in one place: what a phone number looks like, how it is masked, and
which roles may see it whole (PIPL minimisation: docs/customer.md).

Roles are the trust layer's values (``viewer``, ``customer_service``, ``operator``,
``integration``, ``admin``); a role this module does not know sees masked data, so a new
role starts private until someone decides otherwise.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

# Mainland mobile numbers (11 digits, 1[3-9]...), optionally +86; landlines with an area
# code (0571-88886666). Channels that mask send e.g. 138****0000, accepted as given.
PHONE_PATTERN = r"^(\+?86[- ]?)?(1[3-9]\d{9}|0\d{2,3}-?\d{7,8})$"
MASKED_PHONE_PATTERN = r"^(\+?86[- ]?)?1[3-9]\d[*]{4}\d{4}$|^[*]{3,}\d{4}$"
_PHONE = re.compile(PHONE_PATTERN)
_MASKED = re.compile(MASKED_PHONE_PATTERN)

# who needs a phone number whole: people who call customers or staff
PHONE_ROLES = frozenset({"customer_service", "operator", "admin"})


def is_phone(text: str) -> bool:
    """A mainland mobile or landline number; spaces and dashes between digits are fine."""
    return _PHONE.match(re.sub(r"(?<=\d)[ -](?=\d)", "", text.strip())) is not None


def _check_phone(text: str) -> str:
    if not is_phone(text):
        message = "not a phone number (a mobile like 13812345678 or a landline 0571-88886666)"
        raise ValueError(message)
    return text


# a phone number field of a request or an import row (422 naming the field otherwise)
PhoneNumber = Annotated[str, Field(max_length=24), AfterValidator(_check_phone)]


def is_masked_phone(text: str) -> bool:
    return _MASKED.match(text) is not None


def normalise_phone(text: str) -> str:
    """Digits only, without the +86 prefix, so one customer's orders match by phone."""
    digits = re.sub(r"[^0-9*]", "", text)
    if len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    return digits


def mask_phone(phone: str) -> str:
    """138****0000: enough to recognise a number, not enough to call it."""
    digits = normalise_phone(phone)
    if len(digits) <= 4:
        return "*" * len(digits)
    head = digits[:3] if len(digits) >= 11 else ""
    return head + "*" * (len(digits) - len(head) - 4) + digits[-4:]


def mask_name(name: str) -> str:
    """张** : the family name only."""
    return name[:1] + "*" * max(len(name) - 1, 1) if name else name


def mask_address(address: str) -> str:
    """The district part stays (first 6 characters), the rest is hidden."""
    return address[:6] + "***" if len(address) > 6 else "***" if address else address


def may_see_phone(role: str | None) -> bool:
    return role in PHONE_ROLES


def phone_for(role: str | None, phone: str | None) -> str | None:
    """The phone number as ``role`` may see it."""
    if phone is None:
        return None
    return phone if may_see_phone(role) else mask_phone(phone)
