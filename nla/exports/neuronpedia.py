"""Explanations in Neuronpedia's export format, for their importer: MODEL_ID/SOURCE_ID/explanations/batch-N.jsonl.gz,
one JSON object a line whose keys are columns of their `Explanation` table (apps/webapp/prisma/schema.prisma in
hijohnnylin/neuronpedia; their admin import reads the keys of a file's first line as the columns to insert, so every
line has the same keys). docs/export.md maps each field.

One explanation per (vector, recipe): the best-scored ok sample. The vectors must be one imported source (an SAE's
latents: `position` is the latent index, their `index`); corpus activations have no feature index on Neuronpedia.
Flagged explanations are left out unless asked for, and the count left out is reported. It uploads nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from nla.errors import NLAInputError
from nla.exports.select import EXPORT_TIMEOUT_S, require_labels, where_clause
from nla.lake.query import LakeQuery
from nla.lake.store import Lake

ROWS_PER_BATCH = 10_000  # lines per batch file (their importer inserts 10,000 lines at a time)
ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


@dataclass
class NeuronpediaExport:
    folder: Path  # OUT/MODEL_ID/SOURCE_ID/explanations
    rows: int
    files: list[Path]
    left_out: dict[str, int] = field(default_factory=dict)  # why -> rows not exported


def export_neuronpedia(lake: Lake, out: str | Path, *, model_id: str, source_id: str, author_id: str,
                       source: str = "", type_name: str | None = None, explanation_model_name: str | None = None,
                       include_flagged: bool = False, where: str = "",
                       rows_per_batch: int = ROWS_PER_BATCH) -> NeuronpediaExport:
    for flag, value in (("--model-id", model_id), ("--source-id", source_id), ("--author-id", author_id)):
        if not value or not ID_RE.match(value):
            raise NLAInputError(f"{flag} {value!r}: give the id as Neuronpedia has it (letters, digits, _ . -), e.g. "
                                "--model-id gemma-2-2b --source-id 20-gemmascope-res-16k --author-id YOUR_USER_ID.")
    folder = Path(out).expanduser() / model_id / source_id / "explanations"
    if folder.exists() and any(folder.iterdir()):
        raise NLAInputError(f"{folder}: exists and is not empty. Fix: pass a new --out folder (nothing is "
                            "overwritten).")
    with LakeQuery(lake, timeout_s=EXPORT_TIMEOUT_S) as q:
        require_labels(q)
        source = _pick_source(q, source)
        cond = where_clause(q, where)
        base = f"source = $src AND status = 'ok'{cond}"
        left = {}
        if not include_flagged:
            left["flagged (--include-flagged exports them)"] = q.run(
                f"SELECT count(*) FROM labels WHERE {base} AND len(flags) > 0", {"src": source},
                checked=True).column(0)[0].as_py()
        left["not ok (no explanation text)"] = q.run(
            f"SELECT count(*) FROM labels WHERE source = $src AND status <> 'ok'{cond}", {"src": source},
            checked=True).column(0)[0].as_py()
        keep = base + ("" if include_flagged else " AND len(flags) = 0")
        sql = (f"SELECT act_id, recipe, position, explanation, mse, cos, av, ar, flags, sample, created_at FROM labels "
               f"WHERE {keep} QUALIFY row_number() OVER (PARTITION BY act_id, recipe ORDER BY mse ASC NULLS LAST, "
               "sample) = 1 ORDER BY position, recipe")
        left["other samples of the same vector (the best-scored is kept)"] = q.run(
            f"SELECT count(*) FROM labels WHERE {keep}", {"src": source}, checked=True).column(0)[0].as_py()
        files, n, lines = [], 0, []
        folder.mkdir(parents=True, exist_ok=True)
        for batch in q.stream(sql, {"src": source}, batch_rows=4096, checked=True):
            for r in batch.to_pylist():
                lines.append(_line(r, model_id, source_id, author_id, type_name, explanation_model_name))
                if len(lines) >= rows_per_batch:
                    files.append(_write(folder, len(files), lines))
                    n, lines = n + len(lines), []
        if lines:
            files.append(_write(folder, len(files), lines))
            n += len(lines)
    left["other samples of the same vector (the best-scored is kept)"] -= n
    if not n:
        raise NLAInputError(f"nothing to export for source {source}: "
                            + "; ".join(f"{v} {k}" for k, v in left.items() if v) + ". Fix: label the source "
                            "(`nla label --from-activations`), or pass --include-flagged.")
    return NeuronpediaExport(folder, n, files, {k: v for k, v in left.items() if v})


def explanation_id(act_id: str, recipe: str) -> str:
    """A stable id for their `id` column (their ids are 25-character cuids): a re-export inserts nothing twice
    (their importer skips conflicting ids)."""
    return "nla" + hashlib.blake2b(f"{act_id}\x1f{recipe}".encode(), digest_size=11).hexdigest()


def _line(r: dict, model_id: str, source_id: str, author_id: str, type_name: str | None,
          model_name: str | None) -> str:
    scores = "unscored" if r["mse"] is None else f"mse {r['mse']:.4f}, cos {r['cos']:.4f}"
    notes = (f"NLA round trip: {scores} (mse = 2(1 - cos), AR {r['ar'] or 'none'}); AV {r['av']}; recipe "
             f"{r['recipe']}; sample {r['sample']}")
    return json.dumps({
        "id": explanation_id(r["act_id"], r["recipe"]), "modelId": model_id, "layer": source_id,
        "index": str(r["position"]), "description": r["explanation"], "authorId": author_id, "notes": notes,
        "typeName": type_name, "explanationModelName": model_name,
        "createdAt": r["created_at"].isoformat() if r["created_at"] else None}, ensure_ascii=False)


def _write(folder: Path, i: int, lines: list[str]) -> Path:
    path = folder / f"batch-{i}.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _pick_source(q: LakeQuery, source: str) -> str:
    have = [r["source"] for r in q.run("SELECT DISTINCT source FROM labels WHERE source IS NOT NULL ORDER BY 1",
                                       checked=True, limit=None).to_pylist()]
    imported = [s for s in have if s != "corpus"]
    if source:
        if source not in have:
            raise NLAInputError(f"--from {source!r}: no explanations of that source in lake {q.lake.root} (sources: "
                                f"{', '.join(have) or 'none'}). Fix: pick one of them.")
        if source == "corpus":
            raise NLAInputError("--from corpus: corpus activations have no feature index on Neuronpedia (an "
                                "explanation there belongs to one latent of one source). Fix: export an imported "
                                "source (`nla import` an SAE's decoder), or use `nla export hf` for corpus labels.")
        return source
    if len(imported) != 1:
        raise NLAInputError(f"which source? The lake has {len(imported)} imported sources ({', '.join(imported) or 'none'}"
                            "). Fix: pass --from SOURCE, one SAE (or vector set) a Neuronpedia source id stands for.")
    return imported[0]
