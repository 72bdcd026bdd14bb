"""The runs ledger: every job records what it ran (config, code version), when, and what it produced."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa

from nla.lake.schema import arrow_schema
from nla.lake.store import Lake, now
from nla.schemas import RUNS

R = RUNS.col


def new_run_id(job: str) -> str:
    return f"{job}-{now().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("nla")
    except PackageNotFoundError:
        v = "unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{v}+{sha}" if sha else v


def record_run(lake: Lake, run_id: str, *, job: str, config: dict[str, Any], status: str,
               started_at: Any, finished_at: Any = None, counts: dict[str, Any] | None = None,
               throughput: dict[str, Any] | None = None, recipes: dict[str, Any] | None = None) -> None:
    """Insert or update the run's row (jobs call it at start with status running, and at the end)."""
    row = {R.run_id: [run_id], R.job: [job], R.config: [json.dumps(config, default=str)],
           R.config_hash: [config_hash(config)], R.code_version: [code_version()], R.started_at: [started_at],
           R.finished_at: [finished_at], R.status: [status], R.counts: [json.dumps(counts or {})],
           R.throughput: [json.dumps(throughput or {})],
           R.recipes: [json.dumps(recipes, default=str) if recipes is not None else None]}
    lake.merge(RUNS, pa.table(row, schema=arrow_schema(RUNS)), run_id=run_id)
