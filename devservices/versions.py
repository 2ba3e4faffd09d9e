"""Pinned versions and checksums of everything devservices downloads (the one place to bump)."""

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

# SHA-256 of jars in the Kafka libs dir, computed once from Maven Central downloads.
KAFKA_JAR_SHA256: dict[str, str] = {
    f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar": (
        "965af2d9c19be0c169110eb18468a0bee24e24d14071a57c7f8a57bc4d3f990e"
    ),
    f"kafka-clients-{KAFKA_VERSION}.jar": (
        "afe861c05067f4018a3148d73c1ed1e5fc90808757c15b043527d7e535a5d431"
    ),
    f"kafka-tools-{KAFKA_VERSION}.jar": (
        "cb7aedcd2e418b86079c4b35257c8e37800eea84723c78c8b90f535bd589888e"
    ),
    f"log4j-core-{LOG4J_VERSION}.jar": (
        "362b7fcb65b73aa46cc4bc53abf4eb216f444a83b5d1a037cb6fdfff0ae9f0f9"
    ),
    f"log4j-slf4j-impl-{LOG4J_VERSION}.jar": (
        "f835ac2bf1a895d5e687b4ebf238bff05316dd672e572dff235024b6e320bcc9"
    ),
}

# The integ-test-zip is the Apache-2.0 minimal distribution (no bundled JDK, few modules).
ELASTICSEARCH_ARTIFACT = (
    f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{ELASTICSEARCH_VERSION}:zip"
)
ELASTICSEARCH_ZIP_NAME = f"elasticsearch-{ELASTICSEARCH_VERSION}.zip"
ELASTICSEARCH_ZIP_SHA512 = (
    "a75df614854ace52dd0bce977662b3792873ac077ec0af9026cd0b2a0eb119e4"
    "49910f8eb8ed577d1a83c51c6ee6af71bf5004c3cf5b418c979186de8b5dd9e6"
)

KAFKA_MIN_JAVA = 17
ELASTICSEARCH_MIN_JAVA = 21

# PostgreSQL is not downloaded: the local server is Debian's package (Debian 12 ships 15), and
# docker-compose runs the same major version.
POSTGRES_MAJOR = "15"
