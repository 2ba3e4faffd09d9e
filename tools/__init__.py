"""Developer tools that are not part of the pipeline: the Keepa sample generator."""
