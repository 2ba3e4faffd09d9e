"""Run a real Kafka broker, Elasticsearch node and PostgreSQL server locally, without Docker.

Usage: ``python -m devservices up|down|status|logs|classpath``.
"""

from __future__ import annotations

from devservices.errors import DevServicesError

__all__ = ["DevServicesError"]
