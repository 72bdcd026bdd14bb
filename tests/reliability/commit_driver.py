"""The labeling job's driver side without Ray: replay recorded stage output into a lake, shard by shard.

    python -m tests.reliability.commit_driver LAKE BATCHES.pkl [--shards part-0000.jsonl,part-0003.jsonl] [--go FILE]

Does what jobs/label.py does once Ray Data hands it rows: skip the shards already committed to both tables, then feed
every batch of the others to a ShardCommitter, which commits each shard atomically (activations, then explanations,
each followed by its ledger row). The tests SIGKILL it at seeded moments, run it again, and run several at once
against one lake. It prints one line: the shards it committed and how many commits it retried after conflicts. With --go it first
prints "ready" and waits for FILE to exist, so several drivers can start committing at the same moment.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from nla.labeling.committer import ShardCommitter
from nla.labeling.identity import name_of
from nla.lake.store import Lake
from nla.schemas import ACTIVATIONS, EXPLANATIONS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("lake")
    ap.add_argument("batches")
    ap.add_argument("--shards", default="", help="only these shards (comma-separated); default: all")
    ap.add_argument("--go", default="", help="print 'ready', then wait until this file exists before committing")
    args = ap.parse_args(argv)
    with open(args.batches, "rb") as f:
        recorded = pickle.load(f)  # {"batches": [...], "ids": the committer's base_id, layer, d, av_id, ar_id}
    batches: list[dict[str, np.ndarray]] = recorded["batches"]
    lake = Lake(args.lake)
    shards = list(dict.fromkeys(s for b in batches for s in b["shard"].tolist()))
    if args.shards:  # by file name: the batches carry unit ids (name@fingerprint)
        shards = [s for s in shards if name_of(s) in args.shards.split(",")]
    recipes = recorded["ids"]["recipes"]
    done = (lake.committed_shards(ACTIVATIONS.name, recipes[ACTIVATIONS.name])
            & lake.committed_shards(EXPLANATIONS.name, recipes[EXPLANATIONS.name]))
    todo = [s for s in shards if s not in done]
    if args.go:
        print("ready", flush=True)
        while not Path(args.go).exists():
            time.sleep(0.001)
    committer = ShardCommitter(lake, todo, run_id="replay", config_hash="reference", log=lambda *_: None,
                               **recorded["ids"])
    for b in batches:
        keep = np.isin(b["shard"], todo)
        if keep.any():
            committer.add({k: v[keep] for k, v in b.items()})
    committer.finish()
    print(f"committed {len(todo)} shards, {lake.conflicts} commits retried after conflicts", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
