"""Passwords in URLs: checked, masked by parsing, and supplied from the environment.

A database or tracking-store URL is never printed, logged or written with its password: every
URL winback shows goes through :func:`mask_url`, which parses the URL and rebuilds it with
``***`` for the password, whatever characters the password holds. Error texts that quote a URL
get the same treatment by :func:`scrub`, which replaces the whole URL, never the password's
text (a short password would otherwise be cut out of unrelated words).
"""

from __future__ import annotations

from urllib.parse import quote

from winback.errors import ConfigError

__all__ = ["check_url", "mask_url", "scrub", "with_password"]


def _userinfo(url: str) -> tuple[str, str, str] | None:
    """``(scheme://, userinfo, rest)`` of a URL with credentials, else None. The credentials end
    at the last ``@`` before any ``?`` or ``#``, so a password holding ``/``, ``:`` or ``@``
    never spills into what is taken for the host."""
    if "://" not in url:
        return None
    head, rest = url.split("://", 1)
    before = rest.split("?", 1)[0].split("#", 1)[0]
    at = before.rfind("@")
    if at < 0:
        return None
    return head + "://", rest[:at], rest[at + 1 :]


def check_url(url: str, setting: str) -> None:
    """Refuse a URL whose user or password holds an unencoded ``@`` (the host would be
    misread and part of the password printed as a host name); the message never repeats the
    URL."""
    parts = _userinfo(str(url))
    if parts is not None and "@" in parts[1]:
        raise ConfigError(
            f"The {setting} URL has more than one '@' before its host: percent-encode an '@' in "
            "the user or password as %40, or better, give the password in the environment "
            "variable winback reads for it."
        )


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (parsed, not pattern-matched)."""
    text = str(url)
    parts = _userinfo(text)
    if parts is None:
        return text
    head, userinfo, rest = parts
    user, sep, _ = userinfo.partition(":")
    return f"{head}{user}:***@{rest}" if sep else text


def scrub(text: str, url: str) -> str:
    """``text`` (an error message) with every quotation of ``url`` masked."""
    masked = mask_url(url)
    return str(text).replace(str(url), masked) if masked != str(url) else str(text)


def with_password(url: str, password: str | None) -> str:
    """``url`` with ``password`` (percent-encoded) for its user, when it names a user and has
    no password of its own; otherwise ``url`` as it is."""
    parts = _userinfo(str(url))
    if not password or parts is None or ":" in parts[1]:
        return url  # no user to give it to, or a password is in the URL itself
    head, user, rest = parts
    return f"{head}{user}:{quote(password, safe='')}@{rest}"
