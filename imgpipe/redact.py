"""Credentials out of everything shown: URLs and error texts with user, password and secret
query values replaced by ``***``.

Every URL that is logged, put in a message or written to a file (``source.json``) goes
through ``redact_url``; a network library's error text, which may quote the URL, goes
through ``redact_text``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus, urlsplit, urlunsplit

# Query parameters that carry credentials (signed URLs, API tokens): never written anywhere.
SECRET_QUERY = re.compile(
    r"token|key|sig|signature|pass|pwd|secret|credential|auth|session|jwt", re.I
)
HIDDEN = "***"
_PARAM = re.compile(r"(?P<lead>[?&#;])(?P<name>[^=&#?;\s'\"]+)=(?P<value>[^&#;\s'\"<>]*)")
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def url_secrets(url: str) -> list[str]:
    """The credentials inside ``url``: user and password, secret-looking query values."""
    try:
        parts = urlsplit(url)
        found = [parts.username, parts.password]
    except ValueError:
        return []
    for match in _PARAM.finditer(url):
        if SECRET_QUERY.search(unquote_plus(match["name"])):
            found.append(match["value"])
    # Both spellings: a library may show the value percent-encoded or decoded.
    found += [unquote_plus(secret) for secret in found if secret]
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def _hide_params(text: str) -> str:
    def hide(match: re.Match) -> str:
        if SECRET_QUERY.search(unquote_plus(match["name"])):
            return f"{match['lead']}{match['name']}={HIDDEN}"
        return match[0]

    return _PARAM.sub(hide, text)


def redact_url(url: str | None) -> str | None:
    """``url`` safe to record or show: user, password and secret query values as ``***``.

    The one way a URL is shown or written anywhere (logs, messages, ``source.json``).
    """
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # not even a URL (an unclosed IPv6 bracket): hide what looks secret
        return _hide_params(re.sub(r"//[^/?#]*@", f"//{HIDDEN}@", url))
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{HIDDEN}@{netloc.rpartition('@')[2]}"
    return _hide_params(urlunsplit(parts._replace(netloc=netloc)))


def redact_text(text: str, url: str | None = None) -> str:
    """``text`` (an error from a network library, say) with no credentials left in it: those
    of ``url``, and those of any URL or query string the text itself holds."""
    for secret in url_secrets(url) if url else []:
        text = text.replace(secret, HIDDEN)
    return _hide_params(_URL.sub(lambda m: redact_url(m[0]), text))
