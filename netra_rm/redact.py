"""Masking of secrets: a password in a URL never reaches output, logs or the ledger."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

# userinfo with a password: scheme://user:password@host
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")
# query-string secrets: ?password=...&token=...
_QUERY_SECRET = re.compile(r"(?i)(?P<key>(?:password|passwd|pwd|secret|token|api_key|apikey)=)(?P<val>[^&\s]+)")


def mask_url(url: str | None) -> str | None:
    """Return ``url`` with any password (userinfo or query parameter) replaced by ``***``."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{hostport}"
    query = _QUERY_SECRET.sub(lambda m: m.group("key") + MASK, parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing to hide (and urlunsplit would turn unix:///x into unix:/x)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_text(text: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """Mask URL passwords anywhere in free text, and each of ``secrets`` verbatim."""
    if not text:
        return text
    out = _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", text)
    out = _QUERY_SECRET.sub(lambda m: m.group("key") + MASK, out)
    for secret in secrets:
        if secret and len(secret) >= 3:
            out = out.replace(secret, MASK)
    return out


def url_password(url: str | None) -> str | None:
    """The password in ``url``'s userinfo, if any (so callers can scrub it from errors)."""
    if not url:
        return None
    try:
        return urlsplit(url).password
    except ValueError:
        return None
