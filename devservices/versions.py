"""Pinned versions of everything devservices downloads (the one place to bump).

The SHA-256 of every file fetched (each jar, Maven's transitive dependencies included, and the
Elasticsearch zip with each file it unpacks to) is pinned in `pins.sha256` beside this module;
a file without a pin or with another hash is refused. After a bump, a maintainer regenerates the
pins from what Maven Central serves (into a fresh Maven repository, each download checked against
Central's SHA-1) and reviews the diff:

    .venv/bin/python -m devservices pins --update

`python -m devservices pins` checks the cache against the pins without starting anything.
"""

from __future__ import annotations

KAFKA_VERSION = "4.1.2"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.25.3"
ELASTICSEARCH_VERSION = "9.5.4"

# Pinned so a plain `mvn` (whatever Maven version the machine has) resolves the same plugin.
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

# Kafka's POM pins slf4j-api 1.7.36, so the slf4j *1.x* binding (log4j-slf4j-impl) is needed;
# log4j-slf4j2-impl would be ignored and every broker log line silently dropped (NOP logger).
KAFKA_ARTIFACTS: tuple[str, ...] = (
    f"org.apache.kafka:kafka_{SCALA_VERSION}:{KAFKA_VERSION}",
    f"org.apache.kafka:kafka-tools:{KAFKA_VERSION}",
    f"org.apache.logging.log4j:log4j-core:{LOG4J_VERSION}",
    f"org.apache.logging.log4j:log4j-slf4j-impl:{LOG4J_VERSION}",
)

# The integ-test-zip is the Apache-2.0 minimal distribution (no bundled JDK, few modules).
ELASTICSEARCH_ARTIFACT = (
    f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{ELASTICSEARCH_VERSION}:zip"
)
ELASTICSEARCH_ZIP_NAME = f"elasticsearch-{ELASTICSEARCH_VERSION}.zip"

KAFKA_MIN_JAVA = 17
ELASTICSEARCH_MIN_JAVA = 21

# PostgreSQL is not downloaded: the local server is Debian's package (Debian 12 ships 15), and
# docker-compose runs the same major version.
POSTGRES_MAJOR = "15"
