"""Shared pieces of the reliability tests: one small corpus, the undisturbed reference lake, exact snapshots of what
is committed, process trees (to kill what a test started, and nothing else), and the line each test prints about
what it tried and what held (`pytest -s` shows them).

The reference is the labeling job's own plan, stage classes and shard committer run in this process, without Ray,
on the same batches Ray Data forms (read.batch_size = extractor.batch_size = 4 documents, 12 documents per shard, so
every batch lies inside one shard). It equals a Ray run of the job byte for byte, and costs 5 s instead of 15.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from nla.sysinfo import process_tree as tree  # noqa: F401  (the test modules take it from here)

DOCS, SHARDS = 96, 8
# Small batches so kills land mid-shard (the toy config fuses extract+explain+score into one actor). One torch
# thread: with two, every small op of the toy models waits at a barrier whenever another process holds a core, and
# the same labeling took 174 s instead of 6 on this 2-core machine while other work ran.
JOB_ARGS = ("read.batch_size=4", "extractor.batch_size=4", "explainer.threads=1")


def report(tried: str, held: str) -> None:
    """What a test tried and what held, one line each (shown with `pytest -s`)."""
    print(f"\n[reliability] tried: {tried}\n[reliability] held:  {held}")


@dataclass
class Reference:
    corpus: Path
    lake: Path
    batches: Path  # the stages' output batches, pickled, in the order the job's driver receives them


@pytest.fixture(scope="package")
def reference(tmp_path_factory, toy_kit) -> Reference:
    """Made once per session: under dev.py's two pytest workers, in their common folder, by whichever asks first
    (a file lock; the other waits and reads it). The tests only read it."""
    import fcntl

    from nla.toy.shards import write_corpus
    from tests.inprocess import label_fused

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # pytest-xdist's workers each have a folder of their own in it
    root = shared / "reliability-reference"
    with open(shared / "reliability-reference.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "batches.pkl").is_file():  # written last: anything else there is a failed try's
            shutil.rmtree(root, ignore_errors=True)
            write_corpus(root / "corpus", docs=DOCS, shards=SHARDS, seed=11)
            batches, ids = label_fused(root / "corpus", root / "ref", *JOB_ARGS)
            (root / "batches.pkl").write_bytes(pickle.dumps({"batches": batches, "ids": ids}))
    return Reference(root / "corpus", root / "ref", root / "batches.pkl")


def snapshot(lake: Path) -> dict[str, list[tuple]]:
    """Every committed row of activations and explanations, sorted by key, all columns but run_id and created_at
    (vectors as their float32 bytes): equal snapshots are byte-identical tables."""
    from nla.lake.query import LakeQuery
    from nla.lake.store import Lake

    with LakeQuery(Lake(lake)) as q:
        acts = q.run("SELECT * EXCLUDE (run_id) FROM activations ORDER BY act_id", limit=None).to_pylist()
        expl = q.run("SELECT * EXCLUDE (run_id, created_at) FROM explanations ORDER BY act_id, av, ar, sample",
                     limit=None).to_pylist()
    for r in acts:
        r["vector"] = np.asarray(r["vector"], np.float32).tobytes()
    return {"activations": [tuple(r.values()) for r in acts], "explanations": [tuple(r.values()) for r in expl]}


def duplicates(lake: Path) -> dict[str, int]:
    """Rows minus distinct keys, per table: 0 everywhere means every key is there once."""
    from nla.lake.query import LakeQuery
    from nla.lake.store import Lake

    with LakeQuery(Lake(lake)) as q:
        return {t: q.run(f"SELECT count(*) - count(DISTINCT ({k})) AS n FROM {t}").column("n")[0].as_py()
                for t, k in (("activations", "act_id"), ("explanations", "act_id, av, ar, sample"))}


def kill_tree(pids: dict[int, str] | list[int]) -> None:
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
