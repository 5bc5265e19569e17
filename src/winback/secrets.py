"""Passwords in URLs: checked, masked by parsing, and supplied from the environment.

A database or tracking-store URL is never printed, logged or written with its password: every
URL winback shows goes through :func:`mask_url`, which parses the URL and rebuilds it with
``***`` for the password, whatever characters the password holds. Error texts that quote a URL
get the same treatment by :func:`scrub`, which replaces the whole URL, never the password's
text (a short password would otherwise be cut out of unrelated words).
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

from winback.errors import ConfigError

__all__ = ["check_url", "mask_url", "scrub", "with_password"]


def _authority(url: str) -> str | None:
    """The part between ``scheme://`` and the first ``/``, ``?`` or ``#`` after it."""
    if "://" not in url:
        return None
    rest = url.split("://", 1)[1]
    for stop in "/?#":
        rest = rest.split(stop, 1)[0]
    return rest


def check_url(url: str, setting: str) -> None:
    """Refuse a URL whose password holds an unencoded ``@`` (the host would be misread and part
    of the password printed as a host name); the message never repeats the URL."""
    authority = _authority(url)
    if authority is not None and authority.count("@") > 1:
        raise ConfigError(
            f"The {setting} URL has more than one '@' before its host: percent-encode an '@' in "
            "the user or password as %40, or better, give the password in the environment "
            "variable winback reads for it."
        )


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (parsed, not pattern-matched)."""
    text = str(url)
    authority = _authority(text)
    if authority is None or "@" not in authority:
        return text
    userinfo, _, hostport = authority.rpartition("@")
    user, sep, _ = userinfo.partition(":")
    masked = f"{user}:***@{hostport}" if sep else f"{user}@{hostport}"
    head, _, tail = text.partition("://")
    return f"{head}://{masked}{tail[len(authority) :]}"


def scrub(text: str, url: str) -> str:
    """``text`` (an error message) with every quotation of ``url`` masked."""
    masked = mask_url(url)
    return str(text).replace(str(url), masked) if masked != str(url) else str(text)


def with_password(url: str, password: str | None) -> str:
    """``url`` with ``password`` (percent-encoded) for its user, when it names a user and has
    no password of its own; otherwise ``url`` as it is."""
    if not password:
        return url
    parts = urlsplit(url)
    authority = _authority(url) or ""
    if "@" not in authority:
        return url
    userinfo, _, hostport = authority.rpartition("@")
    if ":" in userinfo:
        return url  # a password is given in the URL itself
    netloc = f"{userinfo}:{quote(password, safe='')}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
