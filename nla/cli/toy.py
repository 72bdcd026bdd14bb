"""`nla toy build|path` and `nla demo`: the embedded default, end to end on one laptop."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from nla.cli.io import print_table
from nla.lake import DEMO_DIR


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
    sae = tsub.add_parser("sae", help="write an SAE-style decoder for the toy kit (input for `nla import`)",
                          description="Write a .safetensors file with W_dec (LATENTS x d: unit directions of the "
                                      "toy base's layer-K activations), W_enc and b_dec, as an SAE's file has them.")
    sae.add_argument("--out", default="toy-sae.safetensors", help="file to write (default ./toy-sae.safetensors)")
    sae.add_argument("--latents", type=int, default=512, help="rows of W_dec (default 512)")
    sae.set_defaults(func=cmd_toy_sae)
    te = tsub.add_parser("teacher", help="serve the toy teacher as an OpenAI-compatible API (for `nla teach`)")
    te.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    te.set_defaults(func=cmd_toy_teacher)

    d = sub.add_parser("demo", formatter_class=formatter, help="the whole platform on the toy kit, end to end",
                       description="Build (or reuse) the toy kit, write a toy corpus as jsonl shards, label it with "
                                   "the Ray Data job into a Delta lake (extract -> AV -> AR), then query the lake: "
                                   "the worst-reconstructed explanations, a keyword search and a search by text.",
                       epilog="example:\n  nla demo                    # ./nla-demo/{corpus,lake}\n"
                              "  nla demo --docs 1000 --dir /tmp/demo")
    d.add_argument("--dir", default=DEMO_DIR, help=f"folder for the corpus and the lake (default ./{DEMO_DIR}; "
                   "`nla serve` shows the lake there when there is no ./lake)")
    d.add_argument("--docs", type=int, default=400, help="documents to label (default 400: ~2,400 activations)")
    d.add_argument("--shards", type=int, default=8, help="corpus shards (default 8)")
    d.set_defaults(func=cmd_demo)

def _figures(report: dict) -> str:
    return (f"AR fve_nrm {report['ar_fve']:.3f} | round trip fve_nrm {report['roundtrip_fve']:.3f} | shuffled "
            f"control {report['shuffled_fve']:.3f} | built in {report['build_seconds']:.0f}s")


def cmd_toy_build(args: argparse.Namespace) -> int:
    from nla.toy.build import build
    from nla.toy.kit import ensure_toy_kit, kit_dir

    kit = build(kit_dir()) if args.force else ensure_toy_kit()
    report = json.loads((kit / "report.json").read_text())
    print(f"toy kit: {kit}\n{_figures(report)}")
    if args.out:
        shutil.copytree(kit, args.out, dirs_exist_ok=True)
        print(f"copied to {Path(args.out).resolve()}")
    return 0


def cmd_toy_path(args: argparse.Namespace) -> int:
    from nla.toy.kit import kit_dir

    kit = kit_dir()
    print(kit if (kit / "report.json").is_file() else "")
    return 0


def corpus_size(args: argparse.Namespace) -> None:
    """--docs and --shards of a toy corpus: at least one document in every shard."""
    from nla.cli.io import at_least_one
    from nla.errors import NLAInputError

    at_least_one("--docs", args.docs)
    if at_least_one("--shards", args.shards) > args.docs:
        raise NLAInputError(f"--shards {args.shards}: more shards than the {args.docs} documents (a shard holds at "
                            f"least one). Fix: --shards {args.docs} or fewer, or more --docs.")


def cmd_toy_corpus(args: argparse.Namespace) -> int:
    from nla.toy.shards import write_corpus

    corpus_size(args)
    paths = write_corpus(Path(args.out), docs=args.docs, shards=args.shards, seed=args.seed)
    print(f"{args.docs} documents in {len(paths)} shards -> {Path(args.out).resolve()}")
    return 0


def cmd_toy_sae(args: argparse.Namespace) -> int:
    from nla.errors import NLAInputError
    from nla.toy.sae import write_toy_sae

    if not 1 <= args.latents <= 100_000:
        raise NLAInputError(f"--latents {args.latents}: choose 1..100000.")
    out = write_toy_sae(args.out, latents=args.latents)
    print(f"W_dec ({args.latents} x d), W_enc, b_dec -> {out.resolve()}")
    return 0


def cmd_toy_teacher(args: argparse.Namespace) -> int:
    import time

    from nla.toy.teacher import MODEL, serve

    server = serve(port=args.port)
    host, port = server.server_address[:2]
    print(f"toy teacher ({MODEL}) on http://{host}:{port}/v1 - try: nla teach --data hard_v1 --out hard_v1_teacher "
          f"--teacher-url http://{host}:{port}/v1   (Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.shutdown()


def cmd_demo(args: argparse.Namespace) -> int:
    import subprocess
    import sys

    from nla.labeling.config import default_config
    from nla.lake.query import LakeQuery
    from nla.lake.store import Lake
    from nla.toy.kit import ensure_toy_kit
    from nla.toy.shards import write_corpus

    corpus_size(args)
    t0 = time.perf_counter()
    kit = ensure_toy_kit()
    report = json.loads((kit / "report.json").read_text())
    print(f"[demo] toy kit {kit}\n       {_figures(report)}")
    root = Path(args.dir)
    corpus, lake_dir = root / "corpus", root / "lake"
    write_corpus(corpus, docs=args.docs, shards=args.shards, seed=2026)
    print(f"[demo] {args.docs} documents in {args.shards} shards -> {corpus}\n[demo] labeling into {lake_dir} ...")
    job = subprocess.run([sys.executable, "-m", "nla.jobs.label", "--config", default_config(), f"input={corpus}",
                          f"lake={lake_dir}"])
    if job.returncode != 0:
        return job.returncode
    with LakeQuery(Lake(lake_dir)) as q:
        print("\n[demo] worst-reconstructed explanations:  nla query \"SELECT context, explanation, mse FROM labels "
              "ORDER BY mse DESC LIMIT 5\"")
        t = q.run("SELECT context, explanation, mse FROM labels WHERE status = 'ok' ORDER BY mse DESC LIMIT 5")
        print_table([{**r, "context": "…" + r["context"][-40:]} for r in t.to_pylist()], t.column_names, width=90)
        print("\n[demo] keyword search:  nla search --keyword \"paris\"")
        t = q.keyword("paris", limit=5)
        print_table([{**r, "context": "…" + r["context"][-40:]} for r in t.to_pylist()],
                    ["mse", "context", "explanation"], width=90)
        from nla.client import NLACritic

        text = 'The text is about weather.\n\nIt mentions oslo.\n\nIt ends with "heavy storm".'  # the AV's form
        print(f"\n[demo] search by text:  nla search {json.dumps(text)}")
        t = q.nearest(NLACritic(kit / "ar").reconstruct(text).numpy(), k=5)
        print_table([{**r, "context": "…" + (r["context"] or "")[-40:]} for r in t.to_pylist()],
                    ["similarity", "context", "explanation"], width=90)
        n = q.run("SELECT count(*) n, avg(mse) mse, avg(cos) cos FROM explanations").to_pylist()[0]
    print(f"\n[demo] done in {time.perf_counter() - t0:.0f}s: {n['n']} labeled activations in {lake_dir} (mean mse "
          f"{n['mse']:.3f}, cos {n['cos']:.3f}). Try: nla query --lake {lake_dir} \"SELECT * FROM features LIMIT 5\"")
    serve = "nla serve" if Path(args.dir) == Path(DEMO_DIR) else f"nla serve --lake {lake_dir}"
    print(f"[demo] explore it in a browser: `{serve}`, then open http://127.0.0.1:8000/")
    return 0
