"""Redaction of secrets before anything is printed, logged or answered.

One helper for every place a connection string or a driver message leaves the process: the
dev stack's banner, ``Settings.__repr__``, health-check logs and configuration errors.
Passwords in URIs become ``***`` (``mongodb://user:***@host``, ``redis://:***@host``); the
user name, hosts and options stay, because they are what an operator needs to debug a
connection. API keys are never shown at all (see :func:`mask`).
"""

from __future__ import annotations

import re

#: ``scheme://user:password@`` in a URI, anywhere in a text. The password runs to the last
#: ``@`` before the host part, so a password containing ``@`` (a common mistake when it is
#: not percent-encoded) is still covered whole.
_USERINFO_RE = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)"
    r"(?P<user>[^:/@\s]*):(?P<password>[^/\s]*)@(?=[^@/\s]*(?:[/?#\s]|$))"
)
#: ``?password=...`` style options some drivers accept in the query string.
_QUERY_SECRET_RE = re.compile(r"(?P<key>[?&](?:password|pass|secret|token)=)[^&#\s]*", re.I)

MASK = "***"


def redact(text: str, *, hide_user: bool = False) -> str:
    """``text`` with the password of every URI in it replaced by ``***``.

    Works on a bare URI and on free text (a driver message may quote the URI it was given).
    ``hide_user`` hides the whole user part too (``scheme://***@host``): for URLs whose
    "user" is itself a credential, such as an S3 access key id.
    """
    text = _USERINFO_RE.sub(
        lambda m: (f"{m['scheme']}{MASK}@" if hide_user
                   else f"{m['scheme']}{m['user']}:{MASK}@") if m["password"] else m[0],
        text,
    )
    return _QUERY_SECRET_RE.sub(lambda m: f"{m['key']}{MASK}", text)


def mask(secrets: tuple[str, ...] | list[str]) -> str:
    """How a list of secrets (API keys) is shown: how many, never what."""
    return f"<{len(secrets)} hidden>" if secrets else "<none>"
