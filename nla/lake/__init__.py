"""The lake: Delta tables declared in schemas/, written per shard, read through DuckDB. No Ray here."""
