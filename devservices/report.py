"""The one reporting channel: library code logs here, the CLI decides where it goes."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("devservices")


def configure(verbose: bool = False) -> None:
    """Send progress lines to stderr so stdout stays clean (e.g. for `classpath`)."""
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
