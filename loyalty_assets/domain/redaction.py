"""Secrets out of every message: passwords in connection strings, and the values of secret variables.

``redact`` is applied to every message that can carry a DSN or a credential before it is raised,
logged or alerted. No library masks libpq key=value strings, malformed URIs and known secret
values in free text together, so this is written here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote

MASK = "***"
# Every environment variable the project (or boto3/Dagster for it) reads that holds a secret.
SECRET_ENVIRONMENT_VARIABLES = (
    "LOYALTY_RDS_DSN",
    "LOYALTY_REDSHIFT_PASSWORD",
    "LOYALTY_SMTP_PASSWORD",
    "LOYALTY_API_KEYS",
    "DAGSTER_PG_PASSWORD",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
# Parts of a secret shorter than this are not masked on their own (they would mask ordinary words).
MIN_PART_LENGTH = 4

# ``password=value`` / ``password = 'quoted value'`` in a libpq key=value string.
_KEY_VALUE_PASSWORD = re.compile(r"""(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s'"]+)""", re.IGNORECASE)
# ``scheme://user:password@host``: the password runs to the last ``@`` of the token, so a
# malformed password with ``@``, ``/`` or a bad ``%`` escape is masked whole.
_URI_USERINFO_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)(\S*)(@)")
# The value of ``password=`` up to the next ``key=`` (an unquoted space splits a mistyped value).
_LENIENT_PASSWORD_VALUE = re.compile(r"\bpassword\s*=\s*(.*?)(?=\s+[A-Za-z_]+\s*=|\s*$)", re.IGNORECASE | re.DOTALL)
_QUOTED = re.compile(r'"[^"]*"')


def secret_parts(value: str) -> set[str]:
    """The strings to mask for one secret value: itself, the passwords inside it, and their parts.

    A DSN value yields its password even when the DSN is malformed (``password=Bad Pw`` yields
    ``Bad Pw`` and ``Pw``, the fragment libpq quotes in its parse error); a comma-separated list
    of keys yields every key.
    """
    value = value.strip()
    if not value:
        return set()
    passwords = [match.group(1) for match in _LENIENT_PASSWORD_VALUE.finditer(value)]
    passwords += [match.group(2) for match in _URI_USERINFO_PASSWORD.finditer(value)]
    passwords += value.split(",") if "," in value else []
    parts = {value}
    for password in passwords:
        password = password.strip().strip("'")
        parts |= {password, unquote(password)}
        parts |= set(password.split())
    return {part for part in parts if len(part) >= MIN_PART_LENGTH}


def environment_secrets(environ: Mapping[str, str] | None = None) -> set[str]:
    """Every string to mask for the secret variables set in ``environ`` (default ``os.environ``)."""
    environ = os.environ if environ is None else environ
    return {part for name in SECRET_ENVIRONMENT_VARIABLES for part in secret_parts(environ.get(name, ""))}


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with connection-string passwords, the given secrets and the secret variables masked."""
    text = _KEY_VALUE_PASSWORD.sub(lambda match: match.group(1) + MASK, text)
    text = _URI_USERINFO_PASSWORD.sub(lambda match: match.group(1) + MASK + match.group(3), text)
    known = environment_secrets() | {part for secret in secrets if secret for part in secret_parts(secret)}
    for secret in sorted(known, key=len, reverse=True):  # longest first: a part never splits a whole
        text = text.replace(secret, MASK)
    return text


def mask_quoted(text: str) -> str:
    """Every double-quoted fragment masked: libpq's parse errors quote the text they could not parse."""
    return _QUOTED.sub(f'"{MASK}"', text)


def one_line(text: str) -> str:
    """The message on one line (whitespace runs, newlines included, become one space)."""
    return " ".join(text.split())
