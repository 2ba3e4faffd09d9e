"""Secrets out of what people read: redacted previews, URLs with credentials, secure endpoints.

Pure functions, used wherever text that may hold a secret is printed: a line of an ASIN file or
a config value (``preview``), a service address (``redact_url``, ``scrub_url``: resource errors,
the CLI, the benchmarks' banner), and by the settings to decide which URLs may carry the Keepa
key (``secure_endpoint_problem``).
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


PREVIEW_CHARS = 4


def preview(text: str, shown: int = PREVIEW_CHARS) -> str:
    """Enough of a value to find it, never the whole of a long one: ``'KEEP…' (41 characters)``.

    A file or a config value pointed at the wrong place may hold a secret (``KEY=…`` lines of an
    env file); its first few characters and length locate the mistake without showing the rest.
    """
    if len(text) <= shown:
        return repr(text)
    return f"{text[:shown]!r}… ({len(text)} characters)"


def _split(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 -- raises ValueError on a malformed port
    except ValueError:
        return None
    return parts


def redact_url(url: str) -> str:
    """The URL with its credentials hidden: ``https://user:***@host:9200``, ``https://***@host``.

    A password is replaced and the user name kept (it says which account); a user name alone may
    itself be a token, so it is replaced. A URL that does not parse is shown as ``***``: it cannot
    be told apart from a secret. Several comma-separated URLs (a cluster's nodes) are each
    redacted.
    """
    if "," in url:
        return ",".join(redact_url(part) for part in url.split(","))
    parts = _split(url)
    if parts is None:
        return "***"
    if parts.username is None and parts.password is None:
        return url.strip()
    host = parts.netloc.rsplit("@", 1)[1]
    userinfo = f"{parts.username}:***" if parts.password is not None else "***"
    return parts._replace(netloc=f"{userinfo}@{host}").geturl()


def has_credentials(url: str) -> bool:
    """Whether the URL carries a user name or password (or does not parse, so might)."""
    if "," in url:
        return any(has_credentials(part) for part in url.split(","))
    parts = _split(url)
    return parts is None or parts.username is not None or parts.password is not None


def scrub_url(text: str, url: str) -> str:
    """``text`` with ``url`` shown redacted and its password, if any, replaced anywhere else."""
    text = text.replace(url.strip(), redact_url(url))
    if "," in url:
        for part in url.split(","):
            text = scrub_url(text, part)
        return text
    parts = _split(url)
    if parts is not None:
        for secret in (parts.password, parts.username if parts.password is None else None):
            if secret:
                text = text.replace(secret, "***")
    return text


def remote_hosts(addresses: str) -> list[str]:
    """The hosts off this machine in a bootstrap list ("h1:9092,h2:9092") or a list of URLs
    (credentials ignored)."""
    found = {
        urlsplit(address if "//" in address else f"//{address.strip()}").hostname or ""
        for address in addresses.split(",")
    }
    return sorted(found - LOOPBACK_HOSTS)


def cleartext_login_problem(addresses: str, what: str) -> str | None:
    """Why a password may not be sent in the clear to ``addresses``, or None if it may:
    only loopback hosts (nothing crosses a network) may receive one without TLS."""
    remote = remote_hosts(addresses)
    if not remote:
        return None
    return (
        f"would send {what} without TLS to {', '.join(remote)}; use TLS "
        "(in the clear only to 127.0.0.1, ::1 or localhost)"
    )


def secure_endpoint_problem(url: str) -> str | None:
    """Why a secret may not be sent to ``url``, or None if it may.

    https anywhere; plain http only to a loopback host (a local stand-in server), where nothing
    crosses a network. Credentials in the URL are refused too: they would be logged with it.
    """
    parts = _split(url)
    if parts is None or not parts.hostname or parts.scheme not in ("http", "https"):
        return "is not an http(s) URL with a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials"
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        return (
            "must be https (plain http only to 127.0.0.1, ::1 or localhost): "
            "the key travels in the query string"
        )
    return None
