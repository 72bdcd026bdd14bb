"""Toy corpora as input shards for the labeling job: jsonl files of {"id", "text", "topic"}."""

from __future__ import annotations

import json
from pathlib import Path

from nla.toy.corpus import generate_corpus


def write_corpus(out: Path, *, docs: int, shards: int, seed: int) -> list[Path]:
    """Write `docs` documents as `shards` jsonl files ({"id", "text"} per line)."""
    out.mkdir(parents=True, exist_ok=True)
    corpus = generate_corpus(docs, seed)
    paths = []
    for s in range(shards):
        p = out / f"part-{s:04d}.jsonl"
        with p.open("w", encoding="utf-8") as f:
            for d in corpus[s::shards]:
                f.write(json.dumps({"id": d.doc_id, "text": d.text, "topic": d.topic}) + "\n")
        paths.append(p)
    return paths
