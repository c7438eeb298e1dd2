"""Masking of secrets: a password in a URL never reaches output, logs or the ledger.

Secrets are found by the structure of a URL, not by patterns over text:

- the userinfo ends at the *last* ``@`` before the query, so a password written raw, the
  way generated passwords often are, with ``/``, ``#`` or ``@`` in it
  (``redis://:ab/c#d@e@host:6379/0``), is masked whole; the user name (up to the first
  ``:``) is kept;
- a query parameter is masked when its name, percent-decoded, says ``password``,
  ``pass``, ``pwd``, ``token``, ``secret`` or ``key`` (``?pass%77ord=...`` included);
- nothing else is touched: text that merely contains ``password=`` outside a URL is left
  as it is, so a category, a journal line or a JSON document keeps its shape.

In free text, a URL runs from its ``scheme://`` to the next whitespace or quote. Every
step is a forward scan, so masking takes time linear in the text (see
``bench/bench_redact.py``). A ``?`` inside a password must be written ``%3F``: it starts
the query otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from urllib.parse import quote, unquote, unquote_plus

MASK = "***"
#: What a query parameter's decoded name says when its value is a secret.
SECRET_WORDS = ("password", "pass", "pwd", "token", "secret", "key")

_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_MAX_SCHEME = 32
# where a URL in free text ends
_TOKEN_END = re.compile(r"[\s\"'<>`]")
_SECRET_WORD = re.compile("|".join(SECRET_WORDS), re.IGNORECASE)

# the letters of the secret words and their percent-encodings in lower-cased text
_LETTER_CODES = {f"%{ord(case):02x}": "\0\0" + c for c in sorted(set("".join(SECRET_WORDS)))
                 for case in (c, c.upper())}
_PERCENT_CODE = re.compile("%[0-9a-f]{2}")
# in a lower-cased query with those letters decoded, a parameter whose name (between "&"
# and "=") holds a secret word (a decoded letter is preceded by two NULs), and its value
_SECRET_PARAMETER = re.compile(
    r"&[^&=]*?(?:" + "|".join("".join(("\0{0,2}" if i else "") + c for i, c in enumerate(word))
                              for word in SECRET_WORDS) + r")[^&=]*=([^&]+)")


def _scheme_start(text: str, colon: int) -> int | None:
    """Where the scheme before ``text[colon:colon + 3] == '://'`` starts, or None."""
    start = colon
    while start > 0 and colon - start < _MAX_SCHEME and text[start - 1] in _SCHEME_CHARS:
        start -= 1
    while start < colon and not text[start].isalpha():
        start += 1  # a scheme begins with a letter
    return start if start < colon else None


def _secret_spans(text: str, begin: int, end: int) -> list[tuple[int, int]]:
    """The spans of secrets in the URL ``text[begin:end]`` whose ``://`` ends at ``begin``:
    the userinfo's password, and the values of secret query parameters."""
    spans: list[tuple[int, int]] = []
    query = text.find("?", begin, end)
    before_query = end if query < 0 else query
    at = text.rfind("@", begin, before_query)
    if at >= 0:
        colon = text.find(":", begin, at)
        if colon >= 0 and colon + 1 < at:
            spans.append((colon + 1, at))
    if query >= 0:
        fragment = text.find("#", query, end)
        stop = end if fragment < 0 else fragment
        spans.extend(_query_secrets(text, query + 1, stop))
    return spans


def _query_secrets(text: str, start: int, stop: int) -> list[tuple[int, int]]:
    """The spans of secret parameter values in the query ``text[start:stop]``, found in
    one scan of the lower-cased query with the letters of the secret words decoded in
    place (``%77`` becomes ``\0\0w``: the same length, so positions still match)."""
    region = text[start:stop]
    lowered = region.lower()
    if len(lowered) != len(region):  # lower-casing changed the length (rare letters)
        return _query_secrets_slowly(region, start)
    if "%" in lowered:
        for code in set(_PERCENT_CODE.findall(lowered)) & _LETTER_CODES.keys():
            lowered = lowered.replace(code, _LETTER_CODES[code])
    # the pattern starts at an "&": one is put before the first parameter
    return [(start - 1 + m.start(1), start - 1 + m.end(1)) for m in _SECRET_PARAMETER.finditer("&" + lowered)]


def _query_secrets_slowly(region: str, start: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    position = start
    for item in region.split("&"):
        name, _, value = item.partition("=")
        if value and name and _SECRET_WORD.search(unquote_plus(name)):
            spans.append((position + len(name) + 1, position + len(item)))
        position += len(item) + 1
    return spans


def _urls(text: str) -> Iterable[tuple[int, int, int]]:
    """``(start, after '://', end)`` of each URL in free text, left to right."""
    position = 0
    while True:
        marker = text.find("://", position)
        if marker < 0:
            return
        start = _scheme_start(text, marker)
        found = _TOKEN_END.search(text, marker + 3)
        end = len(text) if found is None else found.start()
        if start is not None:
            yield start, marker + 3, end
        position = max(end, marker + 3)


def mask_spans(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """``text`` with each of ``spans`` (in order, not overlapping) replaced by the mask."""
    if not spans:
        return text
    parts: list[str] = []
    last = 0
    for start, stop in spans:
        parts.append(text[last:start])
        parts.append(MASK)
        last = stop
    parts.append(text[last:])
    return "".join(parts)


def mask_url(url: str | None) -> str | None:
    """``url`` with its password and secret query values replaced by ``***``; the rest of
    it (scheme, user, host, path, other parameters) exactly as given."""
    if not url:
        return url
    marker = url.find("://")
    if marker < 0 or _scheme_start(url, marker) is None:
        return url
    return mask_spans(url, _secret_spans(url, marker + 3, len(url)))


def mask_text(text: str, secrets: Sequence[str] = ()) -> str:
    """Mask the secrets of every URL in free text, and each of ``secrets`` (at least three
    characters long) wherever it appears; everything else is left as it is."""
    if not text:
        return text
    out = text
    if "://" in text:
        spans: list[tuple[int, int]] = []
        for _start, after, end in _urls(text):
            spans.extend(_secret_spans(text, after, end))
        out = mask_spans(text, spans)
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out


def url_password(url: str | None) -> str | None:
    """The password in ``url``'s userinfo as written (not decoded), if any, so callers can
    scrub it from errors."""
    if not url:
        return None
    marker = url.find("://")
    if marker < 0:
        return None
    query = url.find("?", marker + 3)
    at = url.rfind("@", marker + 3, len(url) if query < 0 else query)
    if at < 0:
        return None
    colon = url.find(":", marker + 3, at)
    return url[colon + 1:at] if 0 <= colon < at - 1 else None


def url_secrets(url: str | None) -> list[str]:
    """Every secret ``url`` carries, as written and percent-decoded: its password and the
    values of its secret query parameters. A driver may quote either form in an error."""
    if not url:
        return []
    marker = url.find("://")
    if marker < 0:
        return []
    found: list[str] = []
    for start, stop in _secret_spans(url, marker + 3, len(url)):
        raw = url[start:stop]
        found.append(raw)
        if "%" in raw or "+" in raw:
            found.extend({unquote(raw), unquote_plus(raw)})
    return [s for s in dict.fromkeys(found) if s]


#: What may stay as it is in a normalized user name or password (RFC 3986 unreserved and
#: sub-delimiters, ``:`` and ``%``, so what was percent-encoded already stays so).
_USERINFO_SAFE = "!$&'()*+,;=:%-._~"


def normalized_url(url: str) -> str:
    """``url`` with a password written raw (``/``, ``#`` or ``@`` in it) percent-encoded,
    so that every driver reads the userinfo the way :func:`mask_url` does: up to the last
    ``@`` before the query. A URL without such a password is returned as it is."""
    marker = url.find("://")
    if marker < 0:
        return url
    begin = marker + 3
    query = url.find("?", begin)
    at = url.rfind("@", begin, len(url) if query < 0 else query)
    if at < 0:
        return url
    user, colon, password = url[begin:at].partition(":")
    if not colon or not any(c in password for c in "/#@") and "/" not in user and "#" not in user:
        return url
    return f"{url[:begin]}{quote(user, safe=_USERINFO_SAFE)}:{quote(password, safe=_USERINFO_SAFE)}{url[at:]}"
