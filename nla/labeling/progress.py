"""RunRecorder: a labeling run's row in the runs ledger, kept current while the run works.

At the start the row says `running` and how many shards the run has to do; after committed shards (at most every
`every_s` seconds, so a long run adds a small commit to the runs table now and then, not one per shard) it carries
the counts so far, failures included; at the end its status and the run's summary. The explorer's progress panel
reads these rows with the shards ledger (nla.lake.overview.progress). It does not compute the summary: the job does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nla.lake.runs import record_run
from nla.lake.store import Lake

PROGRESS_EVERY_S = 15.0  # the least time between two progress records of one run


class RunRecorder:
    def __init__(self, lake: Lake, run_id: str, *, job: str, config: dict[str, Any], started_at: Any,
                 recipes: dict[str, Any] | None, shards_total: int, every_s: float = PROGRESS_EVERY_S) -> None:
        self.lake, self.run_id, self.job, self.config = lake, run_id, job, config
        self.started_at, self.recipes, self.shards_total, self.every_s = started_at, recipes, shards_total, every_s
        self.recorded_at = float("-inf")
        self.done = 0  # shards committed, failed or found empty at the last record

    def record(self, status: str, figures: dict[str, Any] | None = None, *, finished_at: Any = None) -> None:
        """Write the row: figures' ints go to counts (with shards_total), its floats to throughput."""
        figures = figures or {}
        counts = {"shards_total": self.shards_total, **{k: v for k, v in figures.items() if not isinstance(v, float)}}
        record_run(self.lake, self.run_id, job=self.job, config=self.config, status=status,
                   started_at=self.started_at, finished_at=finished_at, recipes=self.recipes, counts=counts,
                   throughput={k: v for k, v in figures.items() if isinstance(v, float)})
        self.recorded_at = time.monotonic()

    def progress(self, shards_done: int, figures: Callable[[], dict[str, Any]]) -> bool:
        """Record the running row when more shards are done (committed, failed or empty) than at the last record
        and every_s has passed; figures() is called only then. Whether it recorded."""
        if shards_done == self.done or time.monotonic() - self.recorded_at < self.every_s:
            return False
        self.done = shards_done
        self.record("running", figures())
        return True
