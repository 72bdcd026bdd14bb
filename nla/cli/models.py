"""`nla explain`, `nla score`, `nla init`: the model commands, on local checkpoint folders."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nla.cli.io import at_least_one, parse_int_list, print_table, read_vectors
from nla.errors import NLAInputError
from nla.settings import SamplingSettings


def add_commands(sub: Any, formatter: Any) -> None:
    p = sub.add_parser("explain", formatter_class=formatter, help="explain activation vectors with an AV",
                       description="Explain activation vectors with an AV checkpoint; with --ar, score each "
                                   "explanation's reconstruction (mse = 2(1 - cos)).",
                       epilog="examples:\n"
                              "  nla explain --av KIT/av --vectors acts.npy --ar KIT/ar --temperature 0\n"
                              "  nla explain --av KIT/av --text 'leo said the wind would bring more rain .' "
                              "--positions 4,8 --ar KIT/ar\n"
                              "  (KIT: the folder `nla toy build` prints)")
    p.add_argument("--av", required=True, help="AV checkpoint folder (HF files + nla_meta.yaml)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--vectors", help=".npy file of shape (d,) or (N, d): raw activations at the AV's layer")
    src.add_argument("--text", help="a document: its activations are extracted with the base model first")
    p.add_argument("--row", help="with --vectors: comma-separated rows to explain (default: all)")
    p.add_argument("--positions", help="with --text: token positions (default: every position)")
    p.add_argument("--base", help="with --text: base model folder (default: the sidecar's base_checkpoint, "
                                  "or ../base beside the AV)")
    p.add_argument("--ar", help="AR checkpoint folder: adds mse/cos of each explanation")
    d = SamplingSettings()  # the defaults `nla label` and the server sample with
    p.add_argument("--temperature", type=float, default=d.temperature, help="0 = greedy (default); 1.0 = the "
                                                                           "release's sampling")
    p.add_argument("--top-p", type=float, default=d.top_p)
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--samples", type=int, default=d.samples, help="explanations per vector (use with --temperature "
                                                                 "> 0)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--prompt", help="custom AV prompt holding <INJECT> where the vector goes (default: the sidecar's)")
    p.set_defaults(func=cmd_explain)

    s = sub.add_parser("score", formatter_class=formatter, help="score an explanation against a vector with an AR",
                       description="Reconstruct a vector from an explanation with an AR and compare it to the "
                                   "original: mse_nrm (0 perfect, 2 orthogonal) and cos.",
                       epilog="example:\n  nla score --ar KIT/ar --explanation 'The text is about weather.' "
                              "--vectors acts.npy --row 0")
    s.add_argument("--ar", required=True, help="AR checkpoint folder (HF files + value_head.safetensors + sidecar)")
    s.add_argument("--explanation", required=True, help="the explanation text")
    s.add_argument("--vectors", required=True, help=".npy file of shape (d,) or (N, d)")
    s.add_argument("--row", type=int, default=0, help="which row of --vectors (default 0)")
    s.set_defaults(func=cmd_score)

    i = sub.add_parser("init", formatter_class=formatter, help="make AV/AR init checkpoints from a local HF base",
                       description="Create OUT/av (a copy of the base) and OUT/ar (blocks 0..K, identity value head), "
                                   "stage: init, with sidecars: marker chosen from the tokenizer, neighbours from the "
                                   "rendered prompt, injection_scale = mean activation norm at layer K unless given.",
                       epilog="example:\n  nla init --base ~/.cache/nla/bases/smollm2-135m-instruct --layer 10 "
                              "--out ./smol-nla")
    i.add_argument("--base", required=True, help="local HF causal-LM folder with a chat template")
    i.add_argument("--layer", required=True, type=int, help="K: the pair reads the output of block K")
    i.add_argument("--out", required=True, help="output folder (gets av/ and ar/)")
    i.add_argument("--injection-scale", type=float, default=None, help="L2 norm of injected vectors (default: measured)")
    i.set_defaults(func=cmd_init)


def _base_for(args: argparse.Namespace, meta: Any) -> Path:
    candidates = [args.base] if args.base else [meta.base_checkpoint, str(Path(args.av) / ".." / "base")]
    for c in candidates:
        if c and (Path(c) / "config.json").is_file():
            return Path(c)
    raise NLAInputError(f"--text needs the base model to extract activations; none found at {candidates}. "
                        "Fix: pass --base BASE_DIR (the model the AV's sidecar names as base_checkpoint).")


def cmd_explain(args: argparse.Namespace) -> int:
    import numpy as np

    from nla.client import NLAClient, NLACritic
    from nla.checks import check_checkpoint
    from nla.extract import Extractor
    from nla.extract_config import ExtractConfig
    from nla.prompt import av_content

    # every input is checked against the sidecar before a model loads: a bad one is refused in a second, not after
    # the load (transformers' import alone is 3-4 s on 2 cores)
    at_least_one("--samples", args.samples)
    meta = check_checkpoint(args.av, "av")
    if args.ar:
        check_checkpoint(args.ar, "ar")
    av_content(meta.av_template, meta.tokens.injection_char, args.prompt)  # a custom --prompt must hold <INJECT>
    labels: list[str]
    if args.vectors:
        rows = parse_int_list(args.row, "--row") if args.row else None
        vectors = read_vectors(args.vectors, rows, d=meta.d_model)
        labels = [f"row {r}" for r in (rows or range(len(vectors)))]
    else:
        if not args.text.strip():
            raise NLAInputError("--text is empty. Fix: pass a document, e.g. --text 'The cat sat on the mat.'")
        wanted = parse_int_list(args.positions, "--positions") if args.positions else None
        cfg = ExtractConfig(layer=meta.layer, min_position=0, all_positions=True)
        ext = Extractor.from_pretrained(_base_for(args, meta), cfg)
        got = ext([args.text], ["cli"])
        keep = np.arange(len(got["position"]))
        if wanted is not None:
            missing = sorted(set(wanted) - set(got["position"].tolist()))
            if missing:
                raise NLAInputError(f"--positions {missing}: not in the text (it has positions "
                                    f"0..{int(got['position'].max())}, special tokens excluded).")
            keep = np.array([int(np.flatnonzero(got["position"] == w)[0]) for w in wanted])
        vectors = got["vector"][keep]
        labels = [f"{int(got['position'][k])} {got['token'][k]!r}" for k in keep]
    critic = NLACritic(args.ar) if args.ar else None
    client = NLAClient(args.av)
    sampling = dict(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                    seed=args.seed)
    reps = np.repeat(vectors, args.samples, axis=0)
    gens = client.explain(reps, prompt=args.prompt, **sampling)
    table = [{"input": labels[i // args.samples], "status": g.status, "explanation": g.explanation or g.raw_output}
             for i, g in enumerate(gens)]
    if critic is not None:
        ok = [i for i, g in enumerate(gens) if g.status == "ok"]
        if ok:
            mse, cos = critic.score_batch([gens[i].explanation for i in ok], reps[ok])
            for j, i in enumerate(ok):
                table[i].update(mse=float(mse[j]), cos=float(cos[j]))
    print_table(table, ["input", "status", "mse", "cos", "explanation"] if args.ar else
                ["input", "status", "explanation"], width=90)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from nla.client import NLACritic
    from nla.checks import check_checkpoint
    from nla.prompt import ar_text

    meta = check_checkpoint(args.ar, "ar")  # the inputs first, against the sidecar: then the model loads
    ar_text(meta.ar_template, args.explanation)  # an empty explanation is refused here
    vector = read_vectors(args.vectors, [args.row], d=meta.d_model)[0]
    mse, cos = NLACritic(args.ar).score(args.explanation, vector)
    print(f"mse_nrm {mse:.4f}  cos {cos:.4f}   (0 / 1 perfect, 2 / 0 orthogonal)")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from nla.checkpoint import init_pair

    av, ar = init_pair(args.base, args.layer, args.out, injection_scale=args.injection_scale)
    print(f"AV init: {av}\nAR init: {ar}")
    return 0
