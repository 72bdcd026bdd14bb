"""`nla toy build|path` and `nla demo`: the embedded default, end to end on one laptop."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from nla.cli.io import print_table


def add_commands(sub: Any, formatter: Any) -> None:
    t = sub.add_parser("toy", formatter_class=formatter, help="the toy kit: a tiny NLA pair built on the CPU",
                       description="The toy kit: a synthetic corpus with known content, a tokenizer and a tiny "
                                   "Llama-config base trained on it, and an AV/AR pair fine-tuned from that base in "
                                   "the release's layout. Cached under $NLA_HOME (default ~/.cache/nla), keyed by "
                                   "its recipe.",
                       epilog="examples:\n  nla toy build            # build or reuse the cached kit, print its figures\n"
                              "  nla toy build --out kit  # also copy it to ./kit\n  nla toy path             # "
                              "where the cached kit lives")
    tsub = t.add_subparsers(dest="toy_command", metavar="ACTION")
    tsub.required = True
    b = tsub.add_parser("build", help="build (or reuse) the kit and print its quality figures")
    b.add_argument("--out", help="also copy the kit (base/, av/, ar/, report.json) to this folder")
    b.add_argument("--force", action="store_true", help="rebuild even if the cache holds this recipe")
    b.set_defaults(func=cmd_toy_build)
    p = tsub.add_parser("path", help="print the cached kit's folder (empty if not built)")
    p.set_defaults(func=cmd_toy_path)
    c = tsub.add_parser("corpus", help="write a toy corpus as jsonl shards (input for `nla label`)")
    c.add_argument("--out", default="toy-corpus", help="folder for the shards (default ./toy-corpus)")
    c.add_argument("--docs", type=int, default=500, help="documents in all (default 500: ~3,000 activations)")
    c.add_argument("--shards", type=int, default=5, help="number of shard files (default 5)")
    c.add_argument("--seed", type=int, default=2026, help="seed (the kit itself was trained on seed 0)")
    c.set_defaults(func=cmd_toy_corpus)

    d = sub.add_parser("demo", formatter_class=formatter, help="explain and score fresh toy activations",
                       description="Build (or reuse) the toy kit, write a few new documents, extract their "
                                   "activations with the base, explain them with the AV (greedy) and score the "
                                   "explanations with the AR. Prints a table and a summary.",
                       epilog="example:\n  nla demo --docs 4")
    d.add_argument("--docs", type=int, default=3, help="new documents to label (default 3)")
    d.add_argument("--seed", type=int, default=2026, help="seed of the new documents")
    d.set_defaults(func=cmd_demo)


def _figures(report: dict) -> str:
    return (f"AR fve_nrm {report['ar_fve']:.3f} | round trip fve_nrm {report['roundtrip_fve']:.3f} | shuffled "
            f"control {report['shuffled_fve']:.3f} | built in {report['build_seconds']:.0f}s")


def cmd_toy_build(args: argparse.Namespace) -> int:
    from nla.toy.build import build, ensure_toy_kit, kit_dir

    kit = build(kit_dir()) if args.force else ensure_toy_kit()
    report = json.loads((kit / "report.json").read_text())
    print(f"toy kit: {kit}\n{_figures(report)}")
    if args.out:
        shutil.copytree(kit, args.out, dirs_exist_ok=True)
        print(f"copied to {Path(args.out).resolve()}")
    return 0


def cmd_toy_path(args: argparse.Namespace) -> int:
    from nla.toy.build import kit_dir

    kit = kit_dir()
    print(kit if (kit / "report.json").is_file() else "")
    return 0


def cmd_toy_corpus(args: argparse.Namespace) -> int:
    from nla.toy.shards import write_corpus

    paths = write_corpus(Path(args.out), docs=args.docs, shards=args.shards, seed=args.seed)
    print(f"{args.docs} documents in {len(paths)} shards -> {Path(args.out).resolve()}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from nla.client import NLAClient, NLACritic
    from nla.extract import ExtractConfig, Extractor
    from nla.toy.build import ToyRecipe, ensure_toy_kit
    from nla.toy.corpus import generate_corpus, teacher_explanation

    t0 = time.perf_counter()
    r = ToyRecipe()
    kit = ensure_toy_kit(r)
    client, critic = NLAClient(kit / "av"), NLACritic(kit / "ar")
    docs = generate_corpus(args.docs, args.seed)
    ext = Extractor.from_pretrained(kit / "base", ExtractConfig(layer=client.meta.layer, positions_per_doc=3,
                                                                min_position=r.min_position, context_chars=10_000))
    rows = ext([d.text for d in docs], [d.doc_id for d in docs])
    gens = client.explain(rows["vector"], temperature=0, max_new_tokens=64)
    said = [g.explanation or g.raw_output for g in gens]
    mse, cos = critic.score_batch(said, rows["vector"])
    by_id = {d.doc_id: d for d in docs}
    table = [{"context": "…" + rows["context"][i][-40:], "AV explanation": said[i], "mse": float(mse[i]),
              "cos": float(cos[i]), "teacher": teacher_explanation(by_id[rows["doc_id"][i]], rows["context"][i])}
             for i in range(len(said))]
    print_table(table, ["context", "mse", "cos", "AV explanation"], width=100)
    report = json.loads((kit / "report.json").read_text())
    ok = np.mean([g.status == "ok" for g in gens])
    print(f"\n{len(said)} activations from {len(docs)} new documents in {time.perf_counter() - t0:.1f}s | "
          f"mean mse_nrm {float(mse.mean()):.3f} | mean cos {float(cos.mean()):.3f} | tagged {ok:.0%}")
    print(f"kit {kit}\n{_figures(report)} (held-out figures from report.json)")
    return 0
