"""Tokenizing long documents for extraction: the whole document vs the bounded prefix (nla.extract.bounded_texts).

    .venv/bin/python bench/long_docs.py                  # 8 documents of 0.1, 1 and 10 MB, max_length 1024

A fast tokenizer encodes a whole document before truncating it to max_length tokens; the extractor now encodes a
prefix of max_length * 32 characters when that prefix holds max_length + 64 tokens (the same tokens: the
table compares the two modes' token ids).
Each case runs in a fresh process (SmolLM2-135M's byte-level BPE tokenizer), so its peak RSS is its own. Prints a
table, writes bench/results/long_docs.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DOCS, MAX_LENGTH = 8, 1024


def one(mb: float, mode: str) -> dict:
    from nla import hf
    from nla.bases import smollm2_folder
    from nla.extract import bounded_texts
    from nla.toy.corpus import generate_corpus

    tok = hf.load_tokenizer(smollm2_folder())
    prose = " ".join(d.text for d in generate_corpus(2000, 7))
    n = int(mb * 1_000_000)
    docs = [(prose * (n // len(prose) + 1))[i:i + n] for i in range(DOCS)]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    texts = bounded_texts(tok, docs, MAX_LENGTH) if mode == "bounded" else docs
    ids = tok(texts, add_special_tokens=True, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    seconds = time.perf_counter() - t
    return {"mb": mb, "mode": mode, "seconds": seconds, "tokens_digest": hashlib.sha256(str(ids).encode()).hexdigest(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mb": base}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="*", default=[0.1, 1.0, 10.0], help="document sizes in MB")
    ap.add_argument("--one", nargs=2, metavar=("MB", "MODE"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "long_docs.json"))
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(float(args.one[0]), args.one[1])))
        return
    runs = []
    for mb in args.sizes:
        for mode in ("whole", "bounded"):
            p = subprocess.run([sys.executable, __file__, "--one", str(mb), mode], capture_output=True, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
            runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
        runs[-1]["same_tokens"] = runs[-2]["same_tokens"] = runs[-1]["tokens_digest"] == runs[-2]["tokens_digest"]
    print(f"\n{DOCS} documents tokenized to {MAX_LENGTH} tokens (SmolLM2 tokenizer), {platform.machine()}, "
          f"{os.cpu_count()} cores")
    print(f"{'MB each':>8} {'mode':>8} {'seconds':>9} {'peak RSS MiB':>13} {'same tokens':>12}")
    for r in runs:
        print(f"{r['mb']:>8} {r['mode']:>8} {r['seconds']:>9.3f} {r['peak_rss_mb']:>13.0f} {str(r['same_tokens']):>12}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores", "docs": DOCS,
                               "max_length": MAX_LENGTH, "runs": runs, "date": time.strftime("%Y-%m-%d"),
                               "command": ".venv/bin/python bench/long_docs.py"}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
