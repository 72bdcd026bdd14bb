"""ShardCommitter: turns the pipeline's ordered output into one atomic commit per shard, and keeps the run's figures.

The job streams rows in input order (Ray Data preserve_order), so when a row of a later shard arrives every earlier
shard is complete: its buffered rows are committed (activations first, then explanations) and recorded in the
ledger; a rerun skips ledgered shards and a retried shard replaces its rows. Memory is bounded by one shard's rows.
Failure rows (bad documents, unreadable shards) are counted and reported, never written as data; an unreadable
shard is not ledgered, so a rerun tries it again. Each explanation row is flagged from its own text as it is built;
once every shard is committed, finish() sets the lake-wide flags of the recipe (nla.quality.lakepass) and counts the
run's flags.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from nla.batches import ERROR, OK, concat
from nla.lake.rows import activation_table, explanation_table
from nla.lake.schema import VectorDtype
from nla.lake.store import Lake
from nla.quality.settings import QualitySettings
from nla.schemas import ACTIVATIONS, EXPLANATIONS

if TYPE_CHECKING:
    from nla.labeling.plan import Plan


@dataclass
class RunStats:
    shards_committed: int = 0
    shards_failed: list[tuple[str, str]] = field(default_factory=list)
    shards_empty: list[tuple[str, str]] = field(default_factory=list)  # (shard, likely cause): not ledgered
    shards_retry: list[str] = field(default_factory=list)  # shards with failed AV batches: not ledgered as explained
    explanations_error: int = 0
    first_error: str = ""  # the first failed AV batch's message (its rows hold it in raw_output)
    documents: int = 0
    bad_documents: int = 0
    short_documents: int = 0
    activations: int = 0
    explanations: int = 0
    samples_ok: int = 0
    scored: int = 0
    commit_retries: int = 0  # commits retried because another writer committed to the table first
    mse_sum: float = 0.0
    cos_sum: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    failures: list[str] = field(default_factory=list)  # the first few messages, for the summary and the runs row
    flagged: int = 0  # explanations of this run with at least one quality flag
    flags: dict[str, int] = field(default_factory=dict)  # flag -> explanations of this run carrying it
    _vec_sum: Any = None  # running sum of sqrt(d)-normalised activations: the predict-the-mean baseline
    _vec_n: int = 0

    def add_vectors(self, v: np.ndarray) -> None:
        if not len(v):
            return
        d = v.shape[1]
        vn = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12) * math.sqrt(d)
        self._vec_sum = vn.sum(0) if self._vec_sum is None else self._vec_sum + vn.sum(0)
        self._vec_n += len(v)

    @property
    def mean_mse(self) -> float:
        return self.mse_sum / self.scored if self.scored else float("nan")

    @property
    def mean_cos(self) -> float:
        return self.cos_sum / self.scored if self.scored else float("nan")

    @property
    def fve_nrm(self) -> float:
        """1 - mean mse / Var(v_nrm); Var = 1 - ||mean(v_nrm)||^2 / d for vectors at norm sqrt(d)."""
        if not self.scored or not self._vec_n:
            return float("nan")
        mu = self._vec_sum / self._vec_n
        baseline = 1.0 - float(mu @ mu) / len(mu)
        return 1.0 - self.mean_mse / baseline if baseline > 0 else float("nan")

    @property
    def shards_done(self) -> int:
        """Shards this run is through with: committed, failed or empty."""
        return self.shards_committed + len(self.shards_failed) + len(self.shards_empty)


class ShardCommitter:
    def __init__(self, lake: Lake, order: list[str], *, run_id: str, config_hash: str, base_id: str, layer: int,
                 d: int, av_id: str = "", ar_id: str = "", write_activations: bool = True, write_explanations: bool = True,
                 recipes: dict[str, str] | None = None, sources: dict[str, dict] | None = None,
                 log: Any = print, vector_dtype: VectorDtype = "float32",
                 quality: QualitySettings | None = None) -> None:
        """recipes: table -> the recipe hash its rows are committed under; sources: unit -> its ledger record;
        quality: the flags' thresholds."""
        self.quality = quality or QualitySettings()
        self.vector_dtype = vector_dtype  # how activations are stored (nla.lake.rows.storage_dtype)
        self.lake, self.order = lake, {s: i for i, s in enumerate(order)}
        self.recipes, self.sources = recipes or {}, sources or {}
        self.run_id, self.config_hash, self.base_id, self.layer, self.d = run_id, config_hash, base_id, layer, d
        self.av_id, self.ar_id = av_id, ar_id
        self.write_activations, self.write_explanations = write_activations, write_explanations
        self.log = log
        self.stats = RunStats()
        self.buffer: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)
        self.next_index = 0  # shards with a smaller index are committed
        self.t0 = time.perf_counter()

    @classmethod
    def for_plan(cls, plan: Plan, *, run_id: str, config_hash: str, **kw: Any) -> ShardCommitter:
        """The committer of a run of `plan`: its shards to do in order, its model ids and recipes, the tables its mode
        writes and each shard's ledger record (kw: log, vector_dtype, quality)."""
        return cls(plan.lake, [s.id for s in plan.todo], run_id=run_id, config_hash=config_hash, base_id=plan.base_id,
                   layer=plan.layer, d=plan.d, av_id=plan.av_id, ar_id=plan.ar_id,
                   write_activations=ACTIVATIONS.name in plan.writes,
                   write_explanations=EXPLANATIONS.name in plan.writes,
                   recipes={t: r.hash for t, r in plan.recipes.items()}, sources={s.id: s.source for s in plan.todo},
                   **kw)

    def add(self, batch: dict[str, np.ndarray]) -> None:
        if not batch or not len(batch["shard"]):
            return
        shards = batch["shard"]
        for s in dict.fromkeys(shards.tolist()):
            self.buffer[s].append({k: v[shards == s] for k, v in batch.items()})
        latest = max(self.order[s] for s in dict.fromkeys(shards.tolist()))
        self._commit_before(latest)

    def finish(self) -> RunStats:
        self._commit_before(len(self.order))
        if self.write_explanations and self.stats.explanations:
            self._flag()
        return self.stats

    def _flag(self) -> None:
        """Lake-wide flags for the recipe, then this run's flag counts."""
        from nla.lake.query import LakeQuery
        from nla.quality.lakepass import refresh

        refresh(self.lake, self.recipes.get(EXPLANATIONS.name, ""), self.quality, run_id=self.run_id,
                config_hash=self.config_hash, log=self.log)
        with LakeQuery(self.lake) as q:
            counts = q.run(f"SELECT f, count(*) n FROM (SELECT unnest({EXPLANATIONS.col.flags}) f FROM explanations "
                           "WHERE run_id = $r) GROUP BY f", {"r": self.run_id}, checked=True, limit=None).to_pylist()
            flagged = q.run(f"SELECT count(*) FROM explanations WHERE run_id = $r AND len({EXPLANATIONS.col.flags}) > 0",
                            {"r": self.run_id}, checked=True).column(0)[0].as_py()
        self.stats.flags = {r["f"]: r["n"] for r in counts}
        self.stats.flagged = int(flagged)

    def _commit_before(self, index: int) -> None:
        for shard, i in sorted(self.order.items(), key=lambda kv: kv[1]):
            if self.next_index <= i < index:
                self._commit(shard, concat(self.buffer.pop(shard, [])))
                self.next_index = i + 1

    def _commit(self, shard: str, rows: dict[str, np.ndarray]) -> None:
        st = self.stats
        for stage in ("extract", "explain", "score"):
            if rows and f"t_{stage}" in rows:
                st.stage_seconds[stage] += float(rows[f"t_{stage}"].sum())
        status = rows["status"] if rows else np.array([], dtype=object)
        broken = [m for s, m in zip(status, rows.get("message", [])) if s == "bad_shard"]
        if broken:
            st.shards_failed.append((shard, broken[0]))
            self.log(f"[skip] shard {shard}: {broken[0].removeprefix(f'shard {shard}: ')}")
            return
        first = (rows["sample"] <= 0) if rows and "sample" in rows else np.ones(len(status), bool)
        docs_ok = {d for d, s, f in zip(rows.get("doc_id", []), status, first) if s == OK and f}
        bad = [(d, m) for d, s, m, f in zip(rows.get("doc_id", []), status, rows.get("message", []), first)
               if s != OK and f]
        st.documents += len(docs_ok) + len(bad)
        st.bad_documents += sum(1 for d, m in bad if not m.startswith("no token at"))
        st.short_documents += sum(1 for d, m in bad if m.startswith("no token at"))
        st.failures.extend(f"{shard} {d}: {m}" for d, m in bad[: max(0, 20 - len(st.failures))])
        version, conflicts, waits = None, self.lake.conflicts, self.lake.store_waits
        acts = np.flatnonzero((status == OK) & first)
        if self.write_activations and not len(acts):  # nothing labeled: reported, never ledgered as done
            cause = self._empty_cause(len(docs_ok), bad)
            st.shards_empty.append((shard, cause))
            self.log(f"[empty] shard {shard}: no activations, not marked done ({cause})")
            return
        source = self.sources.get(shard)
        if self.write_activations:
            cols = {k: rows[k][acts] for k in ("doc_id", "position", "token_id", "token", "context", "vector")}
            recipe = self.recipes.get(ACTIVATIONS.name, "")
            table = activation_table(cols, base_model=self.base_id, layer=self.layer, shard=shard, run_id=self.run_id,
                                     recipe=recipe, vector_dtype=self.vector_dtype)
            version = self.lake.commit_shard(ACTIVATIONS, table, shard=shard, run_id=self.run_id, recipe=recipe,
                                             config_hash=self.config_hash, source=source)
        st.activations += len(acts)
        if len(acts):
            st.add_vectors(rows["vector"][acts])
        n_expl = 0
        if self.write_explanations:
            ex = np.flatnonzero((status == OK) & (rows["sample"] >= 0)) if len(status) else np.array([], int)
            has_scores = "mse" in rows
            recipe = self.recipes.get(EXPLANATIONS.name, "")
            table = explanation_table(
                rows["act_id"][ex] if len(ex) else [], explanation=rows["explanation"][ex] if len(ex) else [],
                raw_output=rows["raw_output"][ex] if len(ex) else [],
                status=rows["expl_status"][ex] if len(ex) else [], n_tokens=rows["n_tokens"][ex] if len(ex) else [],
                av=self.av_id, ar=self.ar_id if has_scores else "", samples=rows["sample"][ex] if len(ex) else [],
                shard=shard, run_id=self.run_id, mse=rows["mse"][ex] if has_scores and len(ex) else None,
                cos=rows["cos"][ex] if has_scores and len(ex) else None, recipe=recipe, quality=self.quality)
            errors = int((rows["expl_status"][ex] == ERROR).sum()) if len(ex) else 0
            st.explanations_error += errors
            if errors and not st.first_error:
                st.first_error = str(rows["raw_output"][ex][rows["expl_status"][ex] == ERROR][0])
            if errors:  # the failed AV batches' rows are kept (status error) but the unit is not done: a rerun
                st.shards_retry.append(shard)  # replaces them
                self.log(f"[retry] shard {shard}: {errors} explanations failed (status error); not marked done, a "
                         "rerun of the same command retries them")
            version = self.lake.commit_shard(EXPLANATIONS, table, shard=shard, run_id=self.run_id, recipe=recipe,
                                             config_hash=self.config_hash, source=source, ledger=not errors)
            n_expl = len(ex)
            st.explanations += n_expl
            if len(ex):
                st.samples_ok += int((rows["expl_status"][ex] == OK).sum())
                if has_scores:
                    m = rows["mse"][ex]
                    good = ~np.isnan(m)
                    st.scored += int(good.sum())
                    st.mse_sum += float(m[good].sum())
                    st.cos_sum += float(rows["cos"][ex][good].sum())
        st.shards_committed += 1
        retried = self.lake.conflicts - conflicts
        st.commit_retries += retried
        waited = self.lake.store_waits - waits
        self.log(f"[commit] shard {shard}: {len(acts)} activations, {n_expl} explanations, {len(bad)} bad/short "
                 f"documents (v{version}, {time.perf_counter() - self.t0:.0f}s"
                 f"{f'; {retried} commits retried after concurrent writers won' if retried else ''}"
                 f"{f'; {waited} writes retried while the store did not answer' if waited else ''})"
                 f" · {self.progress()}")

    def progress(self) -> str:
        """How far the run is: shards done of all, activations, rate, and an ETA from the rate so far."""
        st, total = self.stats, len(self.order)
        done = st.shards_done
        elapsed = time.perf_counter() - self.t0
        rate = st.activations / elapsed if elapsed > 0 else 0.0
        eta = elapsed / done * (total - done) if done else float("nan")
        left = "done" if done >= total else f"ETA {eta:.0f}s"
        return f"{done}/{total} shards, {st.activations:,} activations, {rate:,.0f}/s, {left}"

    @staticmethod
    def _empty_cause(n_ok: int, bad: list[tuple[str, str]]) -> str:
        if not n_ok and not bad:
            return "the file holds no documents"
        short = [m for _, m in bad if m.startswith("no token at")]
        if not n_ok and len(short) == len(bad):
            return f"all {len(bad)} documents are too short: {short[0]}"
        if not n_ok:
            return f"all {len(bad)} documents are bad; the first: {next(m for _, m in bad if m not in short)}"
        return f"{n_ok} good documents gave no activation position"
