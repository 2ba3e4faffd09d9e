"""The messages on the pipeline's topics: one module per concern.

- types.py: the shapes (TypedDicts), schema versions, limits, SchemaError, the alert id;
- timestamps.py: ISO-8601 UTC text ↔ datetimes and epoch milliseconds;
- codec.py: bytes ↔ JSON objects (orjson), with the size limit;
- validation.py: the careful checks, failing with a sentence that names the field;
- fast_validation.py: the one-pass fast path for the (nearly always) valid raw update;
- dlq.py: the dead-letter envelope.

Messages are JSON objects in UTF-8 and each carries ``schema_version``. Money is always an
integer in minor units (cents, pence). docs/design.md, "Messages", lists every field.
"""
