"""The labeling job's Ray-free parts: its config, corpus shards, the per-batch stages, and the shard committer."""
