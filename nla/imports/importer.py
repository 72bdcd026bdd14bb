"""Import a file of vectors into the lake's activations, checked first and committed once.

Two passes over the file, each in blocks of bounded size: the first checks every vector (finite, not all zeros) and
fingerprints each unit of rows; only then is anything written, so a bad file leaves the lake as it was. The second
streams the rows into Delta, a few units a commit (Delta's writer holds each open file in memory until the commit,
so one commit per file would grow with it), and ledgers them, so `nla label --from-activations` finds them and a
rerun of the same import does nothing (and says so); a rerun after a storage failure writes only what is missing.

Rows are activations like any other: act_id from (the AV's base, its layer, the source as doc_id, the row index as
position), `source` names where they came from (`sae:NAME`, `file:NAME`), `label`/`meta` carry what the file said
about each row. Their width must be the AV's d. Not here: reading the file (readers.py), labeling (jobs/label.py).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from nla.errors import NLAInputError
from nla.imports.readers import Block, VectorFile, open_vectors
from nla.labeling.identity import Recipe, unit_id
from nla.lake.rows import activation_table, storage_dtype
from nla.lake.store import Lake, now
from nla.schemas import ACTIVATIONS

UNIT_BYTES = 64 * 2**20  # float32 vector bytes per unit: what one labeling task reads and the committer buffers
UNITS_PER_COMMIT = 4  # units written per Delta commit: bounds the writer's memory (about 4 x UNIT_BYTES)
SOURCE_RE = re.compile(r"^[A-Za-z0-9_.:+@-]{1,200}$")


@dataclass
class ImportResult:
    source: str
    file: str
    rows: int  # vectors imported by this call (0 when they were in the lake already)
    start: int
    stop: int
    d: int
    units: list[str]
    recipe: str
    run_id: str = ""
    seconds: float = 0.0
    skipped: str = ""  # why nothing was imported, when nothing was
    stats: dict[str, float] = field(default_factory=dict)


def parse_rows(text: str, n: int, where: str) -> tuple[int, int]:
    """'A:B', 'A:' or ':B' (Python slice, no step) -> (start, stop) within n rows."""
    if not text:
        start, stop = 0, n
    else:
        m = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", text)
        if not m:
            raise NLAInputError(f"--rows {text!r}: expected START:STOP (e.g. 0:512, 1000: or :256). Fix: write the "
                                "range of row (latent) indices to import.")
        start, stop = int(m.group(1) or 0), int(m.group(2) or n)
    if not 0 <= start < stop <= n:
        raise NLAInputError(f"--rows {text or ':'}: {where} has {n} rows, so there is nothing to import in "
                            f"{start}:{stop}. Fix: pick a range inside 0:{n}, with at least one row.")
    return start, stop


def default_source(f: VectorFile) -> str:
    return f"{'sae' if f.kind == 'safetensors' else 'file'}:{f.path.stem if f.kind != 'delta' else f.path.name}"


def import_recipe(*, source: str, base: str, layer: int, label_column: str, meta_columns: Sequence[str]) -> Recipe:
    """What makes an imported activations row besides the file's content: where it says it came from, the space it
    is taken to live in (the AV's base and layer) and the columns carried through."""
    return Recipe({"import": source, "base": base, "layer": layer, "label_column": label_column,
                   "meta_columns": list(meta_columns)})


def import_vectors(lake: Lake, path: str, *, av: str = "toy", source: str = "", tensor: str = "", rows: str = "",
                   transpose: bool = False, vector_column: str = "vector", label_column: str = "",
                   meta_columns: Sequence[str] = (), log: Callable[[str], None] = print) -> ImportResult:
    from nla.lake.runs import new_run_id, record_run
    from nla.pair import resolve_pair

    t0 = time.perf_counter()
    f = open_vectors(path, tensor=tensor, transpose=transpose, vector_column=vector_column, label_column=label_column,
                     meta_columns=meta_columns)
    if f.n == 0:
        raise NLAInputError(f"{f.name}: no rows, nothing to import. Fix: check the file (or the tensor or column "
                            "named).")
    pair = resolve_pair(av=av, check_av=False, what="nla import")  # the AV's sidecar: its layer and d
    if f.d != pair.d:
        hint = "" if f.n != pair.d else (" Its other axis has that width: drop --transpose." if transpose else
                                          " Its other axis has that width: pass --transpose if the vectors are its "
                                          "columns.")
        raise NLAInputError(f"{f.name}: vectors of d={f.d}, but the AV {pair.av.path} explains d={pair.d} (layer "
                            f"{pair.layer} of {pair.av_meta.base_checkpoint}).{hint} Fix: import vectors of that "
                            "width, or pass --av the AV made for them.")
    source = source or default_source(f)
    if not SOURCE_RE.match(source):
        raise NLAInputError(f"--source {source!r}: use letters, digits and _ . : + @ - only (e.g. sae:res-l20). Fix: "
                            "rename it.")
    start, stop = parse_rows(rows, f.n, f.name)
    lake.check_writable()
    lake.check_versions()
    if lake.exists(ACTIVATIONS.name) and lake.layout(ACTIVATIONS.name).get("d") != f.d:
        raise NLAInputError(f"lake {lake.root}: its activations have d={lake.layout(ACTIVATIONS.name).get('d')}, "
                            f"these vectors d={f.d}. Fix: import into another lake (--lake) for another model.")
    base, layer = pair.av_meta.base_checkpoint, pair.layer
    recipe = import_recipe(source=source, base=base, layer=layer, label_column=label_column,
                           meta_columns=meta_columns)
    per_unit = max(1, UNIT_BYTES // (4 * f.d))

    # pass 1: every vector checked, every unit fingerprinted; nothing written yet
    units: list[tuple[int, int, str]] = []  # (start, stop, unit id)
    for block in f.blocks(start, stop, per_unit):
        _check(block, f)
        end = block.start + len(block.vectors)
        units.append((block.start, end, unit_id(f"{source}#{block.start}-{end}", _fingerprint(block))))
    ids = [u for _, _, u in units]
    result = ImportResult(source=source, file=f.name, rows=0, start=start, stop=stop, d=f.d, units=ids,
                          recipe=recipe.hash)
    done = lake.committed_shards(ACTIVATIONS.name, recipe.hash)
    if set(ids) <= done:
        result.skipped = (f"rows {start}:{stop} of {f.name} are in the lake already as source {source} (same content, "
                          f"same recipe {recipe.hash}): nothing to import")
        log(result.skipped)
        return result
    _refuse_overlap(lake, source, start, stop, set(ids))

    run_id = new_run_id("import")
    config = {"file": str(f.path), "tensor": f.tensor, "rows": [start, stop], "transpose": transpose,
              "source": source, "av": pair.av.path, "vector_column": vector_column if f.kind in ("parquet", "delta")
              else "", "label_column": label_column, "meta_columns": list(meta_columns)}
    recipes = {ACTIVATIONS.name: recipe.describe()}
    started = now()
    record_run(lake, run_id, job="import", config=config, status="running", started_at=started, recipes=recipes)
    dtype = storage_dtype(lake, "float32")
    lake.create(ACTIVATIONS, d=f.d, vector_dtype=dtype)
    def batches(a0: int, b0: int) -> Iterator[pa.Table]:  # pass 2: the same blocks, now as rows
        for block in f.blocks(a0, b0, per_unit):
            n = len(block.vectors)
            unit = unit_id(f"{source}#{block.start}-{block.start + n}", _fingerprint(block))
            if unit not in sources:
                raise NLAInputError(f"{f.name}: rows {block.start}+ changed while they were imported. Fix: import a "
                                    "file nothing is writing to; the rows committed so far are replaced then.")
            cols = {"doc_id": [source] * n, "position": np.arange(block.start, block.start + n),
                    "vector": block.vectors, "label": block.labels, "meta": block.meta}
            yield activation_table(cols, base_model=base, layer=layer, shard=unit, run_id=run_id,
                                   recipe=recipe.hash, vector_dtype=dtype, source=source)

    sources = {u: {"name": f"{source}#{a}-{b}", "path": str(f.path.resolve()), "fingerprint": u.rsplit("@", 1)[1],
                   "size": (b - a) * f.d * 4} for a, b, u in units}
    version = None
    try:
        for g in range(0, len(units), UNITS_PER_COMMIT):
            group = units[g:g + UNITS_PER_COMMIT]
            if {u for _, _, u in group} <= done:
                continue  # committed by an import that stopped part way
            a0, b0 = group[0][0], group[-1][1]
            version = lake.commit_units(ACTIVATIONS, lambda a0=a0, b0=b0: batches(a0, b0),
                                        units=[u for _, _, u in group], run_id=run_id, recipe=recipe.hash,
                                        sources=sources)
    except BaseException:
        record_run(lake, run_id, job="import", config=config, status="failed", started_at=started,
                   finished_at=now(), recipes=recipes)
        raise
    result.rows, result.run_id, result.seconds = stop - start, run_id, time.perf_counter() - t0
    from nla.sysinfo import peak_rss_mb

    result.stats = {"vectors_per_s": result.rows / result.seconds if result.seconds else 0.0,
                    "driver_peak_rss_mb": peak_rss_mb()}
    record_run(lake, run_id, job="import", config=config, status="ok", started_at=started, finished_at=now(),
               recipes=recipes, counts={"rows": result.rows, "units": len(ids), "table_version": version},
               throughput=result.stats)
    return result


def _check(block: Block, f: VectorFile) -> None:
    bad = np.flatnonzero(~np.isfinite(block.vectors).all(axis=1))
    if len(bad):
        raise NLAInputError(f"{f.name}: row {block.start + int(bad[0])} has NaN or inf values ({len(bad)} such rows "
                            f"in rows {block.start}-{block.start + len(block.vectors)}). Nothing was imported. Fix: "
                            "drop or repair those rows, or import a --rows range without them.")
    zero = np.flatnonzero(~block.vectors.any(axis=1))
    if len(zero):
        raise NLAInputError(f"{f.name}: row {block.start + int(zero[0])} is all zeros: the AV explains a direction "
                            "(v / |v|) and a zero vector has none. Nothing was imported. Fix: drop the zero rows, or "
                            "import a --rows range without them.")


def _fingerprint(block: Block) -> str:
    h = hashlib.sha256(np.ascontiguousarray(block.vectors, np.float32).tobytes())
    for extra in (block.labels, block.meta):
        h.update(repr(extra).encode())
    return h.hexdigest()[:32]


def _refuse_overlap(lake: Lake, source: str, start: int, stop: int, ours: set[str]) -> None:
    """Rows of this source already in the lake, from another file or other content, must not cover the same
    indices: they would be two vectors with one act_id."""
    if not lake.exists(ACTIVATIONS.name):
        return
    from nla.lake.query import LakeQuery

    A = ACTIVATIONS.col
    with LakeQuery(lake) as q:
        rows = q.run(f"SELECT {A.shard} s, min({A.position}) a, max({A.position}) + 1 b FROM activations WHERE "
                     f"{A.source} = $src GROUP BY 1 ORDER BY 2", {"src": source}, checked=True, limit=None).to_pylist()
    for r in rows:
        if r["s"] not in ours and r["a"] < stop and start < r["b"]:
            raise NLAInputError(f"source {source} already has rows {r['a']}:{r['b']} in lake {lake.root} (unit "
                                f"{r['s']}), other content at the same indices as rows {start}:{stop} of this file. "
                                "Nothing was imported. Fix: import the new file under another --source name, or a "
                                "--rows range that does not overlap.")
