"""`nla import` (vectors into the lake) and `nla quality` (the flags summed up): the command-line side of
nla/imports and nla/quality."""

from __future__ import annotations

import argparse
from typing import Any

from nla.cli.io import print_table


def add_commands(sub: Any, formatter: Any) -> None:
    i = sub.add_parser(
        "import", formatter_class=formatter, help="vectors from a file (SAE decoder rows, steering vectors, ...) into "
        "the lake, to label with `nla label --from-activations`",
        description="Import vectors that are not corpus activations into the lake's activations table: an SAE's "
                    "decoder rows, steering vectors, probe directions, differences of means, cluster centroids. The "
                    "AV explains any direction of its width d (it injects v * injection_scale / |v|), so their "
                    "width must be the AV's d. Every vector is checked (finite, not all zeros) before anything is "
                    "written; the rows are then committed at once. Each row keeps its index in the file (an SAE's "
                    "latent index) as `position`, the --source name as `source` and `doc_id`, and a label and "
                    "metadata when the file has them. The same import again does nothing and says so.",
        epilog="file formats:\n"
               "  .npy          a float matrix (vectors, d), or one vector (d,)\n"
               "  .safetensors  one named tensor (--tensor; an SAE's decoder is usually W_dec, shape latents x d)\n"
               "  .parquet      a column of float lists (--vector-column, default vector), optional --label-column,\n"
               "                --meta-columns (kept as a JSON object per row)\n"
               "  Delta table   a folder with _delta_log/, columns as for Parquet\n\n"
               "examples:\n"
               "  nla import sae.safetensors --tensor W_dec --source sae:res-l20        # every latent\n"
               "  nla import sae.safetensors --tensor W_dec --rows 0:4096               # latents 0..4095\n"
               "  nla import steering.npy --source file:refusal-directions\n"
               "  nla import probes.parquet --label-column name --meta-columns auc,layer\n"
               "  nla label --from-activations                                          # then explain + score them")
    i.add_argument("file", help="a .npy, .safetensors or .parquet file, or a Delta table folder")
    i.add_argument("--tensor", default="", help="safetensors: the tensor holding the vectors (needed when the file "
                                                "has several matrices)")
    i.add_argument("--rows", default="", metavar="START:STOP", help="import only these rows (latent indices), e.g. "
                                                                     "0:512")
    i.add_argument("--transpose", action="store_true", help="the matrix is stored (d, vectors): import its columns")
    i.add_argument("--source", default="", help="the name rows keep in `source`: sae:NAME, file:NAME, ... (default "
                                                "sae:FILE for .safetensors, file:FILE otherwise)")
    i.add_argument("--vector-column", default="vector", help="Parquet/Delta: the column of vectors (default vector)")
    i.add_argument("--label-column", default="", help="Parquet/Delta: a column kept as each row's `label`")
    i.add_argument("--meta-columns", default="", help="Parquet/Delta: comma-separated columns kept as each row's "
                                                      "`meta` (JSON)")
    i.add_argument("--av", default="toy", help="the AV that will explain them: its sidecar gives d and the layer "
                                               "(default toy: the toy kit's)")
    i.add_argument("--lake", default=None, help="lake root (default $NLA_LAKE, else ./lake)")
    i.set_defaults(func=cmd_import)

    q = sub.add_parser(
        "quality", formatter_class=formatter, help="the quality flags of the lake's explanations, summed up",
        description="Count the quality flags per recipe, AV, AR and vector source (the `quality` view): template "
                    "(one text explains many unrelated vectors), degenerate (a loop, an unexpected script, an empty "
                    "body), low_norm (an input below a percentile of its layer's norms), truncated, no_tags; with "
                    "the mean mse of clean and flagged explanations. docs/quality.md says how each is decided.",
        epilog="examples:\n  nla quality\n"
               "  nla query \"SELECT act_id, flags, explanation FROM labels WHERE len(flags) > 0 LIMIT 20\"\n"
               "  nla query \"SELECT * FROM labels WHERE NOT list_contains(flags, 'template')\" --format parquet "
               "--out clean.parquet")
    q.add_argument("--lake", default=None, help="lake root (default $NLA_LAKE, else ./lake)")
    q.set_defaults(func=cmd_quality)


def cmd_import(args: argparse.Namespace) -> int:
    from nla.imports.importer import import_vectors
    from nla.lake.store import Lake

    meta = [c.strip() for c in args.meta_columns.split(",") if c.strip()]
    r = import_vectors(Lake(args.lake), args.file, av=args.av, source=args.source, tensor=args.tensor,
                       rows=args.rows, transpose=args.transpose, vector_column=args.vector_column,
                       label_column=args.label_column, meta_columns=meta)
    if r.skipped:
        return 0
    print(f"imported {r.rows} vectors (d={r.d}) from {r.file} rows {r.start}:{r.stop} as source {r.source}: "
          f"{len(r.units)} units, recipe {r.recipe}, run {r.run_id} ({r.seconds:.1f}s)")
    print("next: nla label --from-activations   (explains and scores them)")
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    from nla.cli.lake import existing_lake
    from nla.errors import NLAInputError
    from nla.lake.query import LakeQuery

    lake = existing_lake(args)
    with LakeQuery(lake) as q:
        if "quality" not in q.views():
            raise NLAInputError(f"lake {lake.root} has no explanations yet, so no flags. Fix: label it first (`nla "
                                "label`, or `nla label --from-activations` after `nla import`).")
        t = q.run("SELECT * FROM quality", limit=None)
    rows = t.to_pylist()
    for r in rows:
        r["recipe"] = (r["recipe"] or "")[:8]
        for k in ("mse_clean", "mse_flagged"):
            r[k] = "" if r[k] is None else f"{r[k]:.3f}"
    print_table(rows, t.column_names, width=40)
    total, flagged = sum(r["explanations"] for r in rows), sum(r["flagged"] for r in rows)
    print(f"({flagged} of {total} explanations flagged; docs/quality.md explains each flag)")
    return 0
