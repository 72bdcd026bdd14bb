"""A HF-datasets-ready folder: data/train-NNNNN-of-NNNNN.parquet (streamed, a bounded number of rows a file) and a
dataset card (README.md) whose YAML header declares the files, and whose body gives the recipes, the models, the
counts and the score summary. `datasets.load_dataset(FOLDER)` reads it as is, locally or pushed to the Hub. It does
not upload anything.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from nla.errors import NLAInputError
from nla.exports.select import EXPORT_TIMEOUT_S, require_labels, where_clause
from nla.lake.query import LakeQuery
from nla.lake.store import Lake
from nla.quality.flags import FLAGS

COLUMNS = ("act_id", "source", "label", "meta", "base_model", "layer", "doc_id", "position", "token", "context",
           "av", "ar", "recipe", "sample", "status", "flags", "explanation", "mse", "cos", "run_id")
ROWS_PER_FILE = 100_000


@dataclass
class HFExport:
    folder: Path
    rows: int
    files: list[Path]


def export_hf(lake: Lake, out: str | Path, *, where: str = "", vectors: bool = False,
              rows_per_file: int = ROWS_PER_FILE, command: str = "") -> HFExport:
    folder = Path(out).expanduser()
    if folder.exists() and any(folder.iterdir()):
        raise NLAInputError(f"--out {out}: the folder exists and is not empty. Fix: pass a new folder (nothing is "
                            "overwritten).")
    if rows_per_file < 1:
        raise NLAInputError(f"--rows-per-file {rows_per_file}: must be >= 1.")
    with LakeQuery(lake, timeout_s=EXPORT_TIMEOUT_S) as q:
        require_labels(q)
        cond = where_clause(q, where)
        cols = ", ".join(f"l.{c}" for c in COLUMNS) + (", a.vector" if vectors else "")
        join = " JOIN activations a USING (act_id)" if vectors else ""
        sql = f"SELECT {cols} FROM labels l{join} WHERE true{cond} ORDER BY l.source, l.doc_id, l.position, l.recipe, l.sample"
        summary = _summary(q, cond)
        if not summary["rows"]:
            raise NLAInputError(f"nothing to export: no explanation in lake {lake.root} matches"
                                f"{' --where ' + repr(where) if where else ''}. Fix: check the condition with nla "
                                "query \"SELECT count(*) FROM labels WHERE ...\".")
        tmp = folder / "data"
        tmp.mkdir(parents=True, exist_ok=True)
        files, writer, n, in_file = [], None, 0, 0
        try:
            for batch in q.stream(sql, batch_rows=8192, checked=True):
                offset = 0
                while offset < batch.num_rows:
                    if writer is None or in_file >= rows_per_file:
                        if writer is not None:
                            writer.close()
                        files.append(tmp / f"part-{len(files):05d}.parquet")
                        writer, in_file = pq.ParquetWriter(files[-1], batch.schema), 0
                    take = batch.slice(offset, rows_per_file - in_file)
                    writer.write_batch(take)
                    offset, in_file, n = offset + take.num_rows, in_file + take.num_rows, n + take.num_rows
        except BaseException:
            if writer is not None:
                writer.close()
            shutil.rmtree(folder, ignore_errors=True)  # a half-written export is no export
            raise
        if writer is not None:
            writer.close()
    named = []
    for i, f in enumerate(files):  # the Hub's shard names: train-00000-of-00003.parquet
        named.append(f.rename(tmp / f"train-{i:05d}-of-{len(files):05d}.parquet"))
    (folder / "README.md").write_text(card(summary, rows=n, vectors=vectors, where=where, command=command),
                                      encoding="utf-8")
    return HFExport(folder, n, named)


def _summary(q: LakeQuery, cond: str) -> dict:
    flags = ", ".join(f"count(*) FILTER (WHERE list_contains(flags, '{f}')) AS {f}" for f in FLAGS)
    per = q.run(f"SELECT recipe, av, ar, any_value(base_model) base_model, any_value(layer) layer, count(*) n, "
                f"count(*) FILTER (WHERE status = 'ok') ok, count(*) FILTER (WHERE len(flags) > 0) flagged, "
                f"avg(mse) mse, avg(cos) cos, median(mse) mse_median, {flags} FROM labels WHERE true{cond} "
                "GROUP BY ALL ORDER BY n DESC", checked=True, limit=None).to_pylist()
    sources = q.run(f"SELECT source, count(*) n FROM labels WHERE true{cond} GROUP BY ALL ORDER BY n DESC",
                    checked=True, limit=None).to_pylist()
    recipes = {}
    if "runs" in q.tables:
        for r in q.run("SELECT recipes FROM runs WHERE recipes IS NOT NULL", checked=True, limit=None).to_pylist():
            for table, rec in (json.loads(r["recipes"]) or {}).items():
                if table == "explanations":
                    recipes[rec["hash"]] = rec["fields"]
    return {"rows": sum(r["n"] for r in per), "per_recipe": per, "sources": sources, "recipe_fields": recipes}


def card(s: dict, *, rows: int, vectors: bool, where: str, command: str) -> str:
    """The dataset card: a YAML header the Hub and `datasets` read, then what the data is, for people."""
    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    lines = ["---", "configs:", "- config_name: default", "  data_files:", "  - split: train",
             "    path: data/train-*.parquet", "tags:", "- interpretability", "- natural-language-autoencoders",
             "- activation-explanations", "---", "", "# NLA explanations", "",
             f"{rows:,} explanations of {'activations and imported vectors' if len(s['sources']) > 1 else 'vectors'} "
             "written by a Natural Language Autoencoder: the AV wrote each explanation from the vector, the AR "
             "reconstructed the vector from the explanation, and `mse` = 2(1 - cos) scores that round trip "
             "(0 perfect, 2 orthogonal). Exported by `nla export hf`"
             + (f" with the condition `{where}`" if where else "") + ".", "",
             "## Models and recipes", "",
             "| recipe | AV | AR | base | layer | rows | ok | flagged | mean mse | median mse | mean cos |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in s["per_recipe"]:
        lines.append(f"| `{r['recipe']}` | {r['av']} | {r['ar'] or '(unscored)'} | {r['base_model']} | "
                     f"{r['layer']} | {r['n']:,} | {r['ok']:,} | {r['flagged']:,} | {num(r['mse'])} | "
                     f"{num(r['mse_median'])} | {num(r['cos'])} |")
    lines += ["", "A recipe is every setting that changes what a row holds (the AV's and AR's content, sampling):"]
    for r in s["per_recipe"]:
        fields = s["recipe_fields"].get(r["recipe"])
        lines.append(f"- `{r['recipe']}`: " + (f"`{json.dumps(fields, sort_keys=True, default=str)}`" if fields
                                               else "fields not recorded (a lake written before recipes)"))
    lines += ["", "## Sources", "", "| source | rows |", "|---|---|"]
    lines += [f"| {r['source']} | {r['n']:,} |" for r in s["sources"]]
    lines += ["", "`corpus` rows are activations extracted from text (`context` is the text before the token); "
              "other sources are vectors imported with `nla import` (`position` is the row or latent index in the "
              "file, `label`/`meta` what the file said about it).", "", "## Quality flags", "",
              "| flag | rows |", "|---|---|"]
    lines += [f"| {f} | {sum(r[f] for r in s['per_recipe']):,} |" for f in FLAGS]
    lines += ["", "`flags` lists what looks wrong with an explanation (empty when clean): `template` (the same text "
              "explains many unrelated vectors), `degenerate` (a loop, an unexpected script, an empty body), "
              "`low_norm` (an input below a percentile of its layer's norms), `truncated`, `no_tags`. Filter them "
              "out for clean labels: `ds.filter(lambda r: not r['flags'])`.", "", "## Columns", "",
              "`act_id` activation id; `source`, `label`, `meta`; `base_model`, `layer` (block K), `doc_id`, "
              "`position`, `token`, `context`; `av`, `ar`, `recipe`, `sample`; `status` (ok | no_tags | truncated | "
              "error); `flags`; `explanation`; `mse`, `cos`; `run_id`"
              + ("; `vector` (the raw vector, float32)." if vectors else "."), "", "## Load", "", "```python",
              "from datasets import load_dataset", "ds = load_dataset(\"PATH_OR_HUB_ID\", split=\"train\")", "```"]
    if command:
        lines += ["", f"Made with: `{command}`"]
    return "\n".join(lines) + "\n"
