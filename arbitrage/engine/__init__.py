"""The stage engine: reads a source partition in batches, has a processor write each batch's
results, and commits through a checkpoint that alone orders flush → commit.

- ranges.py: offset ranges of a run, and planning them from a group's lag;
- stats.py: what a run counted;
- checkpoint.py: the one owner of "durable": flush the producer, then commit the offset;
- dead_letters.py: rejected records → the stage's DLQ, as envelopes;
- processors.py: per stage, what a batch turns into (Elasticsearch writes, produced records);
- runner.py: the loop over partitions and batches.
"""
