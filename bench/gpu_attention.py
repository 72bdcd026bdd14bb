"""The AV's decode step on a GPU, taken apart: the decode attention kernel's tilings at each family's shape, where a
step's time goes (kernel time by kind), and the whole AV under the default tiling and the fastest one.

    python3 bench/gpu_attention.py --out $OUT/gpu_attention.json      # on the lent GPU (run tool); no --tiny

1. Sweep: nla.fast.attention.decode_attention at the shapes of Qwen2.5-7B (batch 1024), Gemma-3-12B (256) and
   Gemma-3-27B (128) at their AV batches (bench/gpu_families.py), the shared prefix of 115 positions and each row at
   its mean decode position (16 own prompt positions + 75 of 150 new tokens), for rows per program (ROWS), keys per
   tile (BLOCK), warps and pipeline stages. Each time is Triton's do_bench median (L2 flushed before each run, as
   between blocks of a real step); bytes = each row's keys and values + the prefix once; GB/s against the measured
   copy bandwidth.
2. Profile (Gemma-3-12B, random bf16 weights, batch 256): one eager decode step under torch.profiler, kernel time
   summed by kind (matrix products, decode attention, fused elementwise, the rest), with the default tiling and the
   fastest; one extraction forward of ~32k tokens likewise.
3. The whole AV (Gemma-3-12B, batch 256, 150 new tokens greedy; median of 3 warm runs) with each tiling, against the
   decode floor as gpu_families.py computes it.
What it does not do: it changes no default (nla.fast.attention.decode_config does); gpu_families.py measures the
families with whatever the defaults are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gpu_families import FAMILIES, Shape, build, make_config, median_time  # noqa: E402
from bench.gpu_stages import build_tokenizer, documents, rate_of, sidecars  # noqa: E402
from nla.fast import attention as fast_attention  # noqa: E402
from nla.av import AVPrompter, SamplingParams  # noqa: E402
from nla.fast.decode import FastBackend, shared_prefix_length  # noqa: E402
from nla.fast.prefill import FastPrefill  # noqa: E402

SHAPES = {"qwen2.5-7b": 1024, "gemma3-12b": 256, "gemma3-27b": 128}  # family: its AV batch in gpu_families.json
LP, OWN, NEW = 115, 16, 150
TILINGS = [dict(BLOCK=b, num_warps=w, num_stages=s) for b, w, s in ((64, 4, 3), (64, 8, 2), (32, 4, 3), (32, 8, 3))]


def sweep(name: str, B: int, bw: float, dev) -> dict:
    from triton.testing import do_bench

    f = FAMILIES[name]
    hkv, hq = f["num_key_value_heads"], f["num_attention_heads"]
    D = f.get("head_dim") or f["hidden_size"] // hq
    G = hq // hkv
    L = OWN + NEW - 1
    t = OWN + NEW // 2
    dt_ = torch.bfloat16
    q = torch.randn(B, 1, hq, D, device=dev, dtype=dt_)
    sk, sv = (torch.randn(hkv, LP, D, device=dev, dtype=dt_) for _ in range(2))
    rk, rv = (torch.randn(B, hkv, L, D, device=dev, dtype=dt_) for _ in range(2))
    tt = torch.tensor([t], device=dev)
    nbytes = 2 * 2 * D * hkv * (B * (t + 1) + LP)
    ref = fast_attention.decode_attention(q, sk, sv, rk, rv, tt, 0.1, config={"ROWS": 1, "BLOCK": 32})
    default = fast_attention.decode_config(D, G, 2)
    rows_opts = [r for r in (1, 2, 4, 8) if r * G <= 16]
    results = []
    for rows in rows_opts:
        for tiling in TILINGS:
            if D * 2 * tiling["BLOCK"] * 2 * tiling["num_stages"] > 200 * 1024:  # K and V tiles per stage
                continue
            cfg = {"ROWS": rows, **tiling}
            try:
                out = fast_attention.decode_attention(q, sk, sv, rk, rv, tt, 0.1, config=cfg)
                err = float((out.float() - ref.float()).abs().max())
                ms = do_bench(lambda: fast_attention.decode_attention(q, sk, sv, rk, rv, tt, 0.1, config=cfg),
                              warmup=10, rep=60, return_mode="median")
            except Exception as e:  # noqa: BLE001 - a tiling that does not compile is recorded, not fatal
                results.append({**cfg, "error": repr(e)[:200]})
                continue
            results.append({**cfg, "us": ms * 1e3, "gb_s": nbytes / ms / 1e6, "of_copy_bw": nbytes / (ms / 1e3) / bw,
                            "max_abs_diff": err})
    ok = [r for r in results if "us" in r]
    best = min(ok, key=lambda r: r["us"])
    base = next((r for r in ok if all(r.get(k) == v for k, v in {"num_warps": 4, "num_stages": 3, **default}.items())),
                None)
    print(f"  {name}: B {B}, G {G}, D {D}: default {base and round(base['us'], 1)} us, best {best}", flush=True)
    return {"batch": B, "G": G, "D": D, "kv_heads": hkv, "t": t, "bytes": nbytes, "default": default,
            "default_us": base and base["us"], "best": best, "configs": ok,
            "failed": [r for r in results if "error" in r]}


def kind_of(name: str) -> str:
    n = name.lower()
    if "decode_kernel" in n:
        return "decode_attention"
    if any(s in n for s in ("gemm", "nvjet", "cutlass", "sm90_", "xmma", "cublas")):
        return "matmul"
    if "flash" in n or "fmha" in n or "attention" in n:
        return "sdpa"
    if n.startswith("triton_") or "fused" in n:
        return "elementwise_fused"
    return "other"


def kernel_profile(fn, dev) -> dict:
    """fn() under torch.profiler: CUDA kernel milliseconds by kind, and the top kernels."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize(dev)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize(dev)
    by_kind: dict[str, float] = {}
    top = []
    for e in prof.key_averages():
        us = e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
        if us <= 0:
            continue
        by_kind[kind_of(e.key)] = by_kind.get(kind_of(e.key), 0.0) + us / 1e3
        top.append((us / 1e3, e.count, e.key[:90]))
    top.sort(reverse=True)
    return {"ms_by_kind": by_kind, "ms_total": sum(by_kind.values()),
            "top": [{"ms": m, "calls": c, "kernel": k} for m, c, k in top[:12]]}


def gemma12b(ceil: dict, tilings: dict, dev, args, save=lambda part: None) -> dict:
    fields = FAMILIES["gemma3-12b"]
    tok = build_tokenizer()
    model = build(make_config(fields), dev, torch.bfloat16)
    shape = Shape(make_config(fields))
    out: dict = {}
    if args.extraction:  # one forward of ~32k tokens through blocks 0..32
        rng = np.random.default_rng(0)
        seqs, rows, pos = documents(rng, 48, shape.vocab, False)
        fast = FastPrefill(model, n_blocks=fields["layer"] + 1)
        out["extraction_profile"] = kernel_profile(lambda: fast.hidden_at(seqs, rows, pos), dev)
        out["extraction_profile"]["tokens"] = int(seqs.lengths.sum())
        del fast
    # the AV
    with tempfile.TemporaryDirectory() as tmp:
        av_meta, _ = sidecars(tok, shape.d, fields["layer"], Path(tmp))
    prompter = AVPrompter(model.get_input_embeddings(), tok, av_meta)
    B = SHAPES["gemma3-12b"]
    embeds = prompter.prompt_embeds(torch.randn(B, shape.d, generator=torch.Generator().manual_seed(1)))
    T = len(prompter.canonical_ids)
    Lp = shared_prefix_length(torch.stack(embeds[:2]))
    floor = shape.av_floor_s(B, Lp, T - Lp, NEW, ceil["rate"], ceil["bw"])
    greedy = SamplingParams(temperature=0, max_new_tokens=NEW)
    default_config = fast_attention.decode_config
    for label, cfg in tilings.items():
        fast_attention.decode_config = (lambda *a, c=cfg: dict(c)) if cfg else default_config
        try:
            backend = FastBackend(model, tok, {tok.eos_token_id})
            t, times, _ = median_time(lambda: backend.generate(embeds, greedy), dev)
            with torch.inference_mode():  # one eager step at the mean decode position, on the state left behind
                backend.t_buf.fill_(OWN + NEW // 2)
                prof = kernel_profile(lambda: backend._step(B, backend._cap[1], None), dev)
        finally:
            fast_attention.decode_config = default_config
        out[f"av_{label}"] = {"config": cfg or default_config(shape.hd, shape.hq // shape.hkv, 2), "seconds": times,
                              "per_s": B / t, "decode_floor_ratio": floor / t, "step_profile": prof}
        print(f"  gemma3-12b AV {label}: {B / t:.1f}/s, {floor / t:.3f} of the floor; step kernels "
              f"{ {k: round(v, 2) for k, v in prof['ms_by_kind'].items()} } ms", flush=True)
        save(out)
        del backend
        torch.cuda.empty_cache()
    out.update(batch=B, new_tokens=NEW, decode_floor_per_s=B / floor)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/gpu_attention.json")
    ap.add_argument("--skip-av", action="store_true", help="the kernel sweep only")
    ap.add_argument("--extraction", action="store_true", help="also profile one Gemma-3-12B extraction forward")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu_attention.py times a Triton kernel on a GPU. Fix: run it on a CUDA machine.")
    dev = torch.device("cuda")
    t0 = time.perf_counter()
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    x = torch.randn(512 * 2**20, device=dev)
    y = torch.empty_like(x)
    ceil = {"rate": rate_of(lambda: a @ a, 2 * 8192**3, dev, 0.0)[0],
            "bw": rate_of(lambda: y.copy_(x), 2 * x.numel() * 4, dev, 0.0)[0]}  # as gpu_stages.ceilings, no hold
    del a, x, y
    rec: dict = {"gpu": torch.cuda.get_device_name(dev), "torch": torch.__version__,
                 "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "command": "python3 bench/gpu_attention.py " + " ".join(sys.argv[1:]),
                 "matmul_tflops": ceil["rate"] / 1e12, "copy_tb_s": ceil["bw"] / 1e12, "sweep": {}}
    # Gemma-3-12B first (its sweep, then its AV under the best tiling), then the other shapes
    rec["sweep"]["gemma3-12b"] = sweep("gemma3-12b", SHAPES["gemma3-12b"], ceil["bw"], dev)
    args.out.write_text(json.dumps(rec, indent=2) + "\n")
    if not args.skip_av:
        best = {k: v for k, v in rec["sweep"]["gemma3-12b"]["best"].items()
                if k in ("ROWS", "BLOCK", "num_warps", "num_stages")}
        def save(part: dict) -> None:
            rec["gemma3-12b"] = part
            args.out.write_text(json.dumps(rec, indent=2) + "\n")

        rec["gemma3-12b"] = gemma12b(ceil, {"default": None, "best": best}, dev, args, save)
        args.out.write_text(json.dumps(rec, indent=2) + "\n")
    for name, B in SHAPES.items():
        if name not in rec["sweep"]:
            rec["sweep"][name] = sweep(name, B, ceil["bw"], dev)
            args.out.write_text(json.dumps(rec, indent=2) + "\n")
    rec["seconds"] = time.perf_counter() - t0
    args.out.write_text(json.dumps(rec, indent=2) + "\n")
    print(f"\nGPU: {rec['gpu']}; copy {rec['copy_tb_s']:.2f} TB/s")
    print(f"{'family':12s} {'B':>5s} {'G':>2s} {'D':>4s} {'default us':>10s} {'best us':>8s} {'best GB/s':>9s}  best")
    for name, s in rec["sweep"].items():
        b = s["best"]
        print(f"{name:12s} {s['batch']:>5d} {s['G']:>2d} {s['D']:>4d} {s['default_us'] or float('nan'):>10.1f} "
              f"{b['us']:>8.1f} {b['gb_s']:>9.0f}  ROWS {b['ROWS']} BLOCK {b['BLOCK']} warps {b['num_warps']} "
              f"stages {b['num_stages']}")
    print(f"wrote {args.out} ({rec['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
