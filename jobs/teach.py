"""SFT targets at scale: `nla teach` (= python -m nla.jobs.teach) relabels a mined training set with better
explanations.

    python -m nla.jobs.teach --data hard_v1 --out hard_v1_teacher --teacher-url http://127.0.0.1:8000/v1
    python -m nla.jobs.teach --data hard_v1 --out hard_v1_best --method best-of-k --k 8

Ray Data streams the training set's parquet files through TeachStage (an actor pool: HTTP requests in flight to the
teacher, or the AV + AR for best-of-k) into training_sets/<out>, written as one new Delta version. Rows that get no
target (best-of-k found nothing better than the mined explanation) are counted and left out.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, replace

from nla.jobs.entry import run_main
from nla.errors import NLAInputError
from nla.jobs.raystart import start_ray
from nla.rayaddress import cluster_address
from nla.train.config import TeachConfig


def to_arrow(batch: dict, schema):
    import pyarrow as pa

    from nla.lake.schema import vectors_to_arrow

    keep = [i for i, e in enumerate(batch["explanation"]) if e]
    cols = {}
    for f in schema:
        v = batch[f.name]
        if f.name == "vector":
            cols[f.name] = vectors_to_arrow(v[keep])
        else:
            cols[f.name] = pa.array([v[i] for i in keep], type=f.type)
    return pa.RecordBatch.from_pydict(cols, schema=schema), len(batch["explanation"]) - len(keep)


def run(cfg: TeachConfig) -> dict:
    import ray

    from nla.lake.mine import training_table
    from nla.lake.runs import new_run_id, record_run
    from nla.lake.store import Lake, now
    from nla.stages.teach import ReadTrainingFile, TeachStage
    from nla.train.targets import Teacher, TeacherSettings
    from nla.schemas import TRAINING_SET

    lake = Lake(cfg.lake or None)
    src, dst = training_table(cfg.data), training_table(cfg.out)
    if src == dst:
        raise NLAInputError(f"--out {cfg.out}: same as --data. Fix: write the targets to a new name, e.g. "
                            f"{cfg.data}_teacher.")
    d = lake.layout(src).get("d")  # NLATableNotFound names the lake's tables
    files = lake.table(src).file_uris()
    if not files:
        raise NLAInputError(f"--data {cfg.data}: the training set is empty. Fix: mine examples first (`nla mine`).")
    teacher = None
    if cfg.method == "teacher":
        teacher = TeacherSettings(url=cfg.teacher_url, model=cfg.teacher_model)
        Teacher(replace(teacher, timeout_s=10)).explain("probe .")
    av = ar = ""
    if cfg.method == "best-of-k":
        from nla.pair import resolve_pair

        pair = resolve_pair(av=cfg.av, ar=cfg.ar, what="best-of-k targets")
        av, ar = pair.av.path, pair.ar.path if pair.ar else ""
    run_id, started, t0 = new_run_id("teach"), now(), time.perf_counter()
    config = asdict(cfg)
    if not ray.is_initialized():  # $RAY_ADDRESS; a cluster that is not there is refused before the run is recorded
        start_ray(cluster_address(), log_to_driver=False)
    record_run(lake, run_id, job="teach", config=config, status="running", started_at=started)
    ds = ray.data.from_items([{"file": f} for f in files], override_num_blocks=len(files))
    ds = ds.map_batches(ReadTrainingFile, fn_constructor_kwargs={"d": d, "storage_options": lake.storage_options},
                        batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.25)
    ds = ds.map_batches(TeachStage, fn_constructor_kwargs={
        "method": cfg.method, "teacher": teacher, "av": av, "ar": ar, "k": cfg.k, "in_flight": cfg.in_flight},
        batch_size=cfg.batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=cfg.concurrency),
        num_cpus=cfg.num_cpus)
    schema = lake.arrow_schema(src, TRAINING_SET)
    stats = {"rows_in": 0, "no_target": 0}

    def batches():
        for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
            rb, dropped = to_arrow(b, schema)
            stats["rows_in"] += len(b["explanation"])
            stats["no_target"] += dropped
            print(f"[teach] {stats['rows_in']} rows, {stats['no_target']} without a target "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
            yield rb

    status = "failed"
    try:
        version = lake.overwrite(TRAINING_SET, batches(), name=dst, run_id=run_id, d=d,
                                 extra_metadata={"source": src, "method": cfg.method})
        status = "ok"
    finally:
        record_run(lake, run_id, job="teach", config=config, status=status, started_at=started, finished_at=now(),
                   counts=stats, throughput={"seconds": time.perf_counter() - t0})
    rows = stats["rows_in"] - stats["no_target"]
    print(f"\nrun {run_id}: {rows} targets -> {dst} (v{version}); {stats['no_target']} rows got none; "
          f"{time.perf_counter() - t0:.0f}s")
    return {"run_id": run_id, "table": dst, "version": version, "rows": rows, **stats}


def parser() -> argparse.ArgumentParser:
    """The options of `nla teach`: one per TeachConfig field, the defaults the dataclass's."""
    c = TeachConfig
    ap = argparse.ArgumentParser(prog="python -m nla.jobs.teach", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="training set to relabel (training_sets/<name>)")
    ap.add_argument("--out", required=True, help="name of the new training set")
    ap.add_argument("--method", choices=["teacher", "best-of-k"], default=c.method)
    ap.add_argument("--teacher-url", default=c.teacher_url, help="OpenAI-compatible API base")
    ap.add_argument("--teacher-model", default=c.teacher_model)
    ap.add_argument("--av", default=c.av, help="best-of-k: the AV that samples")
    ap.add_argument("--ar", default=c.ar, help="best-of-k: the AR that ranks")
    ap.add_argument("--k", type=int, default=c.k, help="best-of-k: samples per activation")
    ap.add_argument("--lake", default=c.lake, help="lake root (default $NLA_LAKE or ./lake)")
    ap.add_argument("--batch-size", type=int, default=c.batch_size)
    ap.add_argument("--concurrency", type=int, default=c.concurrency, help="TeachStage actors")
    ap.add_argument("--num-cpus", type=float, default=c.num_cpus)
    ap.add_argument("--in-flight", type=int, default=c.in_flight, help="teacher requests in flight per actor")
    return ap


def main(argv: list[str] | None = None) -> int:
    cfg = TeachConfig(**vars(parser().parse_args(argv)))
    return run_main(lambda: run(cfg))


if __name__ == "__main__":
    sys.exit(main())
