"""`nla import` at real width: an (N x 3584) float32 .npy (Qwen-7B's d) into a fresh lake, memory measured.

    .venv/bin/python bench/import_scale.py                       # N = 100,000 and 1,000,000 (needs ~30 GB of disk)
    .venv/bin/python bench/import_scale.py --rows 100000 --dir /data/tmp

Each size runs in its own process (its peak RSS is its own): the file is written first (memory-mapped, in pieces),
then imported by the same code as `nla import` (check pass, then one streamed commit). The AV is a folder holding
only a sidecar of d 3584: the import reads nothing else of it. Writes bench/results/import_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
D = 3584


def one(rows: int, folder: Path) -> dict:
    import yaml

    from nla.imports.importer import import_vectors
    from nla.lake.store import Lake
    from nla.toy.kit import ensure_toy_kit

    av = folder / "av"
    av.mkdir()
    meta = yaml.safe_load((ensure_toy_kit() / "av" / "nla_meta.yaml").read_text(encoding="utf-8"))
    meta.update(d_model=D, extraction_layer_index=20, base_checkpoint="Qwen/Qwen2.5-7B-Instruct")
    (av / "nla_meta.yaml").write_text(yaml.safe_dump(meta, allow_unicode=True), encoding="utf-8")
    path = folder / "vectors.npy"
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:  # written in pieces, no memory map: the process's peak RSS is the import's
        np.lib.format.write_array_header_2_0(f, {"descr": "<f4", "fortran_order": False, "shape": (rows, D)})
        for a in range(0, rows, 8192):
            f.write(rng.standard_normal((min(8192, rows - a), D), dtype=np.float32).tobytes())
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    r = import_vectors(Lake(folder / "lake"), str(path), av=str(av), source="file:bench", log=lambda _: None)
    seconds = time.perf_counter() - t0
    lake_bytes = sum(f.stat().st_size for f in (folder / "lake").rglob("*") if f.is_file())
    return {"rows": rows, "d": D, "file_gb": round(path.stat().st_size / 2**30, 2), "units": len(r.units),
            "seconds": round(seconds, 1), "vectors_per_s": round(rows / seconds),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "peak_rss_mb_before_import": round(rss_before), "lake_gb": round(lake_bytes / 2**30, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--dir", default=None, help="scratch folder (default: the system's temp folder)")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        folder = Path(tempfile.mkdtemp(prefix="nla-import-", dir=args.dir))
        try:
            print(json.dumps(one(args.one, folder)))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    runs = []
    for n in args.rows:
        cmd = [sys.executable, __file__, "--one", str(n)] + (["--dir", args.dir] if args.dir else [])
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if p.returncode:
            raise SystemExit(p.stderr[-3000:])
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(runs[-1], flush=True)
    result = {"command": "python bench/import_scale.py" + (f" --rows {' '.join(map(str, args.rows))}"
                                                           if args.rows != [100_000, 1_000_000] else ""),
              "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "runs": runs}
    (ROOT / "bench/results/import_scale.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
