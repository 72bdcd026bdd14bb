"""The lake: Delta tables declared in schemas/, written per shard, read through DuckDB. No Ray here."""

DEMO_DIR = "nla-demo"  # `nla demo` writes its corpus and lake here; `nla serve` shows that lake when there is no ./lake
