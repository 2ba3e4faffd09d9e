"""Write the client properties file Kafka's own tools (bin/kafka-*) need to reach the cluster the
environment names: ``python -m arbitrage.cli.kafka_tools_config PATH``. Prints nothing for a
PLAINTEXT cluster (the tools need no file then) and PATH otherwise.

The file holds the SASL password, so it is created 0600 in a 0700 directory; the settings come
from arbitrage/clients/kafka_security.py like every other client's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from arbitrage.settings import Settings, SettingsError


def write(path: Path, settings: Settings) -> bool:
    """Write the file; False (and nothing written) when the cluster needs no security config."""
    if settings.kafka_security.protocol == "PLAINTEXT":
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(settings.kafka().tools_properties())
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m arbitrage.cli.kafka_tools_config PATH", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    path = Path(argv[0])
    if write(path, settings):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
