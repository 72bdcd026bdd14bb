"""Every released family on the fast path, greedy and sampled, beside the plain path (warm) and the rooflines.

    python3 bench/gpu_families.py --out $OUT/gpu_families.json                       # on the lent GPU (run tool)
    python3 bench/gpu_families.py --families gemma3-27b llama70b-block --out ...     # a second call, merged
    .venv/bin/python bench/gpu_families.py --tiny                                      # CPU smoke test (/tmp)

Per family (Qwen2.5-7B, Gemma-3-12B, Gemma-3-27B: the released configs' shapes, random bf16 weights, since the
hubs are unreachable from the GPU machine): the machine's matmul rate and copy bandwidth; checks on a 4-block model
of the family's width in fp32 (TF32 off): fast greedy tokens equal to transformers' and extraction/AR vectors equal;
sampling checks in bf16 (repeatable; a row's samples the same in a batch of 8 and of 64; top-k 1 = greedy); then
timings, each the median of 3 warm runs (a warm-up run first, also for the plain path):
- extraction: blocks 0..K over web-like documents (up to 1024 tokens, 10 positions each), tokens/s, / roofline;
- AR: K+1 blocks + value head over ~165-token inputs, explanations/s, / roofline;
- AV: 150 new tokens from injected prompts: fast greedy, fast sampled (T = 1.0), best-of-4 (each vector's 4 samples
  consecutive: one prefill per vector; vectors/s), and the plain HFBackend (transformers generate) at the same batch.
`llama70b-block` times the fast AV decode of a Llama-3.3-70B-shaped model cut to 1 and to 2 blocks (real vocab),
whose difference is one block's cost, and extrapolates to 80 blocks (one GPU cannot hold the 70B in bf16).
The JSON holds `gpu` and one object per family; a run with --families merges into an existing --out file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
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

from bench.gpu_stages import (agreement, ar_inputs, build_tokenizer, ceilings, clock, documents,  # noqa: E402
                              rel_err, sidecars)
from nla.ar import ARModel  # noqa: E402
from nla.av import AVPrompter, HFBackend, SamplingParams  # noqa: E402
from nla.extract import Extractor  # noqa: E402
from nla.extract_config import ExtractConfig  # noqa: E402
from nla.fast.decode import FastBackend, shared_prefix_length  # noqa: E402
from nla.fast.prefill import FastAR, FastPrefill  # noqa: E402
from nla.fast.sampling import sample_key  # noqa: E402

GEMMA_ROPE = {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
              "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}
# The released bases' config.json fields that shape the compute; layer = the released NLA's K.
FAMILIES = {
    "qwen2.5-7b": dict(kind="qwen2", layer=20, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, rope_theta=1_000_000.0,
                       rms_norm_eps=1e-6, tie_word_embeddings=False, max_position_embeddings=32768,
                       bos_token_id=151643, eos_token_id=151645),
    "gemma3-12b": dict(kind="gemma3_text", layer=32, hidden_size=3840, intermediate_size=15360, num_hidden_layers=48,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=256, query_pre_attn_scalar=256,
                       vocab_size=262208, sliding_window=1024, rope_parameters=GEMMA_ROPE, rms_norm_eps=1e-6,
                       max_position_embeddings=131072, bos_token_id=2, eos_token_id=1, pad_token_id=0),
    "gemma3-27b": dict(kind="gemma3_text", layer=41, hidden_size=5376, intermediate_size=21504, num_hidden_layers=62,
                       num_attention_heads=32, num_key_value_heads=16, head_dim=128, query_pre_attn_scalar=168,
                       vocab_size=262208, sliding_window=1024, rope_parameters=GEMMA_ROPE, rms_norm_eps=1e-6,
                       max_position_embeddings=131072, bos_token_id=2, eos_token_id=1, pad_token_id=0),
}
LLAMA70B = dict(kind="llama", layer=53, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                num_attention_heads=64, num_key_value_heads=8, vocab_size=128256, rope_theta=500_000.0,
                rms_norm_eps=1e-5, tie_word_embeddings=False, max_position_embeddings=131072, bos_token_id=128000,
                eos_token_id=128009)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=2000)


def tiny(fields: dict) -> dict:
    """The family at a tiny size (CPU smoke tests), its kind and structure kept."""
    extra = {"head_dim": 16, "query_pre_attn_scalar": 16} if fields["kind"] == "gemma3_text" else {}
    return {**fields, **TINY, **extra, "layer": 1}


def make_config(fields: dict, blocks: int | None = None, **over):
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config

    f = {k: v for k, v in fields.items() if k not in ("kind", "layer")}
    f.update(over)
    f["num_hidden_layers"] = blocks or f["num_hidden_layers"]
    cls = {"qwen2": Qwen2Config, "gemma3_text": Gemma3TextConfig, "llama": LlamaConfig}[fields["kind"]]
    if fields["kind"] == "gemma3_text" and "layer_types" not in f:  # the released 5 local : 1 global pattern
        f["layer_types"] = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                            for i in range(f["num_hidden_layers"])]
    cfg = cls(**f)
    cfg._attn_implementation = "sdpa"
    return cfg


def build(cfg, dev: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    with torch.device(dev):
        return AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Shape:
    """FLOP and byte counts of one family (head_dim may differ from d / heads, as in Gemma-3)."""

    def __init__(self, cfg) -> None:
        self.d, self.hq, self.hkv = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
        self.hd = getattr(cfg, "head_dim", None) or self.d // self.hq
        self.inter, self.vocab, self.blocks = cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers
        self.block_params = 2 * self.d * self.hd * (self.hq + self.hkv) + 3 * self.d * self.inter

    def prefill_flops(self, lengths: np.ndarray, blocks: int) -> float:
        L = np.asarray(lengths, dtype=np.float64)
        return float((2 * self.block_params * blocks * L + blocks * 2 * self.hq * self.hd * L * (L + 1)).sum())

    def kv_bytes_per_position(self, blocks: int | None = None) -> int:
        return (blocks or self.blocks) * 2 * self.hkv * self.hd * 2

    def av_floor_s(self, B: int, Lp: int, Ts: int, new: int, rate: float, bw: float) -> float:
        """gpu_stages.Shape.av_floor_s for this shape: prefix once, each row's suffix, then per decode step the larger
        of FLOPs / rate and bytes / bandwidth (weights once, the shared prefix's KV once, each row's own KV)."""
        n = self.blocks
        t = self.prefill_flops(np.array([Lp]), n) / rate
        keys = Lp + np.arange(1, Ts + 1)
        suffix = 2 * self.block_params * n * Ts + n * 4 * self.hq * self.hd * keys.sum() + 2 * self.d * self.vocab
        t += B * suffix / rate
        weight_bytes = 2 * (self.block_params * n + self.d * self.vocab)
        for s in range(1, new):
            attention = n * 4 * self.hq * self.hd * (Lp + Ts + s)
            flops = B * (2 * self.block_params * n + 2 * self.d * self.vocab + attention)
            nbytes = weight_bytes + self.kv_bytes_per_position() * (Lp + B * (Ts + s))
            t += max(flops / rate, nbytes / bw)
        return t


def median_time(fn, dev, runs: int = 3) -> tuple[float, list[float], object]:
    """A warm-up call, then the median of `runs` timed calls (seconds, all times, the last result)."""
    fn()
    times, out = [], None
    for _ in range(runs):
        t, out = clock(fn, dev)
        times.append(t)
    return statistics.median(times), times, out


# ---- checks -------------------------------------------------------------------------------------------------------
def checks(fields: dict, tok, dev, args) -> dict:
    """fp32 (TF32 off) on a 4-block model of the family's width: fast greedy tokens == transformers', extraction and
    AR vectors equal (max relative error); Gemma's check model has window 128 so long documents cross it."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    over = {"num_hidden_layers": 4}
    if fields["kind"] == "gemma3_text":
        over.update(layer_types=["sliding_attention", "full_attention"] * 2, sliding_window=128)
    fields = tiny(fields) if args.tiny else fields
    cfg = make_config(fields, **over)
    model = build(cfg, dev, torch.float32)
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        av_meta, _ = sidecars(tok, cfg.hidden_size, 1, Path(tmp))
    eos = {tok.eos_token_id}
    rng = np.random.default_rng(1)
    # extraction (blocks 0..2) and the AR (3 blocks + value head) against transformers
    seqs, rows, pos = documents(rng, 12, cfg.vocab_size, args.tiny)
    ex = Extractor(model, tok, ExtractConfig(layer=2), device=str(dev))
    plain = []
    for i in range(len(seqs.lengths)):
        ids = torch.from_numpy(seqs.padded(np.array([i]), int(seqs.lengths[i]), 0))
        h = ex.block_output(ids, torch.ones_like(ids))[0]  # (T, d)
        plain.append(h[torch.from_numpy(pos[rows == i]).to(h.device)].float().cpu())
    fast = FastPrefill(model, n_blocks=3).hidden_at(seqs, rows, pos)
    plain = torch.cat(plain)
    out["extraction_fp32"] = {**rel_err(fast, plain), "max_abs_err": float((fast - plain).abs().max())}
    ar_over = {**over, "num_hidden_layers": 3}
    if "layer_types" in over:
        ar_over["layer_types"] = over["layer_types"][:3]
    ar = ARModel(build(make_config(fields, **ar_over), dev, torch.float32)).to(dev).eval()
    ar_seqs = ar_inputs(rng, 32, cfg.vocab_size, args.tiny)
    with torch.inference_mode():
        expected = []
        for i in range(len(ar_seqs.lengths)):
            ids = torch.from_numpy(ar_seqs.padded(np.array([i]), int(ar_seqs.lengths[i]), 0)).to(dev)
            expected.append(ar(ids, torch.ones_like(ids)).float().cpu())
    got = FastAR(ar).reconstruct_ids(ar_seqs)
    expected = torch.cat(expected)
    out["ar_fp32"] = {**rel_err(got, expected), "max_abs_err": float((got - expected).abs().max())}
    del ar
    # the AV inside one window (the released 1024)
    if fields["kind"] == "gemma3_text":
        model.config.sliding_window = fields["sliding_window"]
    prompter = AVPrompter(model.get_input_embeddings(), tok, av_meta)
    vectors = torch.randn(8, cfg.hidden_size, generator=torch.Generator().manual_seed(2))
    embeds = prompter.prompt_embeds(vectors)
    greedy = SamplingParams(temperature=0, max_new_tokens=args.check_tokens)
    fast_av = FastBackend(model, tok, eos)
    a, b = fast_av.generate(embeds, greedy), HFBackend(model, tok, eos).generate(embeds, greedy)
    out["av_greedy_fp32"] = {"identical_rows": sum(x == y for x, y in zip(a, b)), "rows": len(a),
                             "new_tokens": args.check_tokens, "pass": a == b}
    # sampling in fp32: a row's samples the same alone, among others, in another batch size
    sampled = SamplingParams(temperature=1.0, max_new_tokens=args.check_tokens, seed=3)
    keys = [sample_key(i, 0) for i in range(8)]
    full = fast_av.generate(embeds, sampled, keys)
    some = [6, 1, 3]
    part = fast_av.generate([embeds[i] for i in some], sampled, [keys[i] for i in some])
    out["av_sampled_fp32_batch_independent"] = {**agreement(part, [full[i] for i in some]),
                                                "pass": part == [full[i] for i in some]}
    out["extraction_fp32"]["pass"] = out["extraction_fp32"]["max_rel_err"] < 1e-4
    out["ar_fp32"]["pass"] = out["ar_fp32"]["max_rel_err"] < 1e-4
    del fast_av, model
    free()
    torch.backends.cuda.matmul.allow_tf32 = True
    return out


def sampling_checks(backend: FastBackend, prompter: AVPrompter, d: int, args) -> dict:
    """bf16 at the real shape: the same call twice is identical; a row's samples are the same in a batch of 64 and
    in a batch of 8 (other neighbours, other batch size); top-k 1 sampling equals greedy."""
    v = torch.randn(64, d, generator=torch.Generator().manual_seed(5))
    embeds = prompter.prompt_embeds(v)
    keys = [sample_key(i, 0) for i in range(64)]
    params = SamplingParams(temperature=1.0, max_new_tokens=args.check_tokens, seed=3)
    first, again = backend.generate(embeds, params, keys), backend.generate(embeds, params, keys)
    pick = [5, 17, 60, 2, 33, 48, 11, 40]
    small = backend.generate([embeds[i] for i in pick], params, [keys[i] for i in pick])
    greedy = backend.generate(embeds[:8], SamplingParams(temperature=0, max_new_tokens=args.check_tokens))
    top1 = backend.generate(embeds[:8], SamplingParams(temperature=1.0, top_k=1, max_new_tokens=args.check_tokens,
                                                       seed=3), keys[:8])
    return {"repeatable": agreement(first, again),
            "batch8_vs_batch64": agreement(small, [first[i] for i in pick]),
            "top_k1_vs_greedy": agreement(top1, greedy),
            "distinct_samples": len({tuple(t) for t, _ in first}), "pass": first == again,
            "note": "bf16 logits differ with the batch size (GEMM kernels) and random weights give near-flat "
                    "distributions, so rows diverge after the common prefix; the streams themselves are "
                    "batch-independent (fp32 check above, CPU tests)"}


# ---- timings ------------------------------------------------------------------------------------------------------
def pick_batch(kv_row_bytes: int, cap: int, dev) -> int:
    """The largest power of two <= cap whose per-row caches take at most 55% of the free GPU memory (the plain path
    keeps its own cache, freed between paths)."""
    if dev.type != "cuda":
        return min(cap, 8)
    free_b = torch.cuda.mem_get_info(dev)[0]
    B = cap
    while B > 16 and B * kv_row_bytes > 0.55 * free_b:
        B //= 2
    return B


def time_family(name: str, fields: dict, tok, ceil: dict, dev, args) -> dict:
    fields = tiny(fields) if args.tiny else fields
    K = fields["layer"]
    rec: dict = {"config": name, "random_weights": True, "layer": K}
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    rng = np.random.default_rng(0)
    # extraction and the AR on blocks 0..K
    cut = build(make_config(fields, K + 1), dev, dtype)
    shape = Shape(make_config(fields))
    seqs, rows, pos = documents(rng, args.docs, shape.vocab, args.tiny)
    fast = FastPrefill(cut, n_blocks=K + 1, max_tokens=args.max_tokens)
    t, times, _ = median_time(lambda: fast.hidden_at(seqs, rows, pos), dev)
    flops = shape.prefill_flops(seqs.lengths, K + 1)
    rec["extraction_tokens_per_s"] = float(seqs.lengths.sum()) / t
    rec["extraction_roofline_ratio"] = flops / ceil["rate"] / t
    rec["extraction_seconds"] = times
    del fast
    ar = ARModel(cut).to(dev).eval()
    ar_seqs = ar_inputs(rng, args.explanations, shape.vocab, args.tiny)
    fast_ar = FastAR(ar, max_tokens=args.max_tokens)
    t, times, _ = median_time(lambda: fast_ar.reconstruct_ids(ar_seqs), dev)
    n = len(ar_seqs.lengths)
    rec["ar_per_s"] = n / t
    rec["ar_roofline_ratio"] = (shape.prefill_flops(ar_seqs.lengths, K + 1) + n * 2 * shape.d ** 2) / ceil["rate"] / t
    rec["ar_seconds"] = times
    del fast_ar, ar, cut
    free()
    print(f"  {name}: extraction {rec['extraction_tokens_per_s']:,.0f} tokens/s, AR {rec['ar_per_s']:,.1f}/s",
          flush=True)
    # the AV
    model = build(make_config(fields), dev, dtype)
    with tempfile.TemporaryDirectory() as tmp:
        av_meta, _ = sidecars(tok, shape.d, K, Path(tmp))
    eos = {tok.eos_token_id}
    prompter = AVPrompter(model.get_input_embeddings(), tok, av_meta)
    T = len(prompter.canonical_ids)
    Lp = shared_prefix_length(torch.stack(prompter.prompt_embeds(torch.randn(2, shape.d))))
    B = pick_batch(shape.kv_bytes_per_position() * (T - Lp + args.new_tokens), args.batch_cap, dev)
    v = torch.randn(B, shape.d, generator=torch.Generator().manual_seed(1))
    embeds = prompter.prompt_embeds(v)
    backend = FastBackend(model, tok, eos)
    rec["sampling_checks_bf16"] = sampling_checks(backend, prompter, shape.d, args)
    greedy = SamplingParams(temperature=0, max_new_tokens=args.new_tokens)
    sampled = SamplingParams(temperature=1.0, max_new_tokens=args.new_tokens, seed=0)
    keys = [sample_key(i, 0) for i in range(B)]
    best4 = [sample_key(i // 4, i % 4) for i in range(B)]
    embeds4 = [e for e in embeds[:B // 4] for _ in range(4)]  # each vector's 4 samples consecutive
    runs = {"av_greedy": lambda: backend.generate(embeds, greedy),
            "av_sampled": lambda: backend.generate(embeds, sampled, keys),
            "av_best_of_4": lambda: backend.generate(embeds4, sampled, best4)}
    av: dict = {}
    for key, fn in runs.items():
        t, times, out = median_time(fn, dev)
        av[key] = (t, times, float(np.mean([len(r[0]) for r in out])))
        print(f"  {name}: {key} batch {B}: {B / t:,.1f} rows/s ({times})", flush=True)
    floor = shape.av_floor_s(B, Lp, T - Lp, args.new_tokens, ceil["rate"], ceil["bw"])
    rec.update(av_batch=B, av_new_tokens=args.new_tokens, av_prompt_tokens=T, av_shared_prefix_tokens=Lp,
               av_greedy_per_s=B / av["av_greedy"][0], av_sampled_per_s=B / av["av_sampled"][0],
               av_best_of_4_vectors_per_s=(B // 4) / av["av_best_of_4"][0],
               av_roofline_ratio=floor / av["av_greedy"][0], av_decode_floor_per_s=B / floor,
               av_seconds={k: x[1] for k, x in av.items()},
               av_mean_new_tokens={k: x[2] for k, x in av.items()})
    del backend
    free()
    plain = HFBackend(model, tok, eos)
    t, times, out = median_time(lambda: plain.generate(embeds, greedy), dev)
    rec.update(av_plain_warm_per_s=B / t, av_plain_seconds=times,
               av_plain_mean_new_tokens=float(np.mean([len(r[0]) for r in out])))
    print(f"  {name}: plain HF warm batch {B}: {B / t:,.1f}/s ({times})", flush=True)
    rec["ratios"] = {"sampled_over_greedy": rec["av_sampled_per_s"] / rec["av_greedy_per_s"],
                     "best_of_4_vectors_over_greedy": rec["av_best_of_4_vectors_per_s"] / rec["av_greedy_per_s"],
                     "fast_greedy_over_plain_warm": rec["av_greedy_per_s"] / rec["av_plain_warm_per_s"]}
    del plain, model
    free()
    return rec


def llama70b_block(tok, ceil: dict, dev, args) -> dict:
    """The fast greedy AV at the Llama-3.3-70B shape, cut to 1 and 2 blocks (real vocab and lm_head): the
    difference is one block's decode cost; 80 blocks extrapolated (an estimate, not a run)."""
    fields = tiny(LLAMA70B) if args.tiny else LLAMA70B
    out: dict = {"config": "llama-3.3-70b shape, 1 and 2 blocks", "random_weights": True}
    t_of = {}
    B = args.batch_cap
    for blocks in (1, 2):
        model = build(make_config(fields, blocks), dev, torch.bfloat16 if dev.type == "cuda" else torch.float32)
        with tempfile.TemporaryDirectory() as tmp:
            av_meta, _ = sidecars(tok, fields["hidden_size"], 0, Path(tmp))
        prompter = AVPrompter(model.get_input_embeddings(), tok, av_meta)
        embeds = prompter.prompt_embeds(torch.randn(B, fields["hidden_size"]))
        backend = FastBackend(model, tok, {tok.eos_token_id})
        params = SamplingParams(temperature=0, max_new_tokens=args.new_tokens)
        t, times, _ = median_time(lambda: backend.generate(embeds, params), dev)
        t_of[blocks] = t
        out[f"seconds_{blocks}_blocks"] = times
        del backend, model
        free()
    per_block = t_of[2] - t_of[1]
    est = t_of[1] + 79 * per_block
    shape = Shape(make_config(fields))
    out.update(batch=B, new_tokens=args.new_tokens, seconds_per_block=per_block,
               per_step_ms_per_block=per_block / args.new_tokens * 1e3,
               block_weight_gb=2 * shape.block_params / 1e9,
               estimated_80_block_per_s_one_gpu_if_it_fit=B / est,
               kv_bytes_per_position_80_blocks=shape.kv_bytes_per_position())
    print(f"  llama70b: {per_block / args.new_tokens * 1e3:.2f} ms per block per step at batch {B}; 80 blocks "
          f"would give ~{B / est:,.0f} explanations/s on one GPU if it fit", flush=True)
    return out


def table(rec: dict) -> str:
    lines = [f"GPU: {rec['gpu']}  matmul {rec['matmul_tflops']:.0f} TFLOP/s, copy {rec['copy_tb_s']:.2f} TB/s",
             f"{'family':12s} {'extr tok/s':>11s} {'ratio':>5s} {'AR/s':>7s} {'ratio':>5s} {'batch':>5s} "
             f"{'greedy/s':>8s} {'sampled/s':>9s} {'s/g':>5s} {'bo4 vec/s':>9s} {'bo4/g':>5s} {'plain/s':>7s} "
             f"{'ratio':>5s} {'g/plain':>7s} checks"]
    for name, r in rec["families"].items():
        if "error" in r:
            lines.append(f"{name:12s} failed: {r['error'].strip().splitlines()[-1][:100]}")
            continue
        c = r.get("checks", {})
        ok = all(v.get("pass", False) for v in c.values() if isinstance(v, dict)) and c.get("pass", True) \
            and r["sampling_checks_bf16"]["pass"]
        lines.append(f"{name:12s} {r['extraction_tokens_per_s']:>11,.0f} {r['extraction_roofline_ratio']:>5.2f} "
                     f"{r['ar_per_s']:>7,.1f} {r['ar_roofline_ratio']:>5.2f} {r['av_batch']:>5d} "
                     f"{r['av_greedy_per_s']:>8,.1f} {r['av_sampled_per_s']:>9,.1f} "
                     f"{r['ratios']['sampled_over_greedy']:>5.2f} {r['av_best_of_4_vectors_per_s']:>9,.1f} "
                     f"{r['ratios']['best_of_4_vectors_over_greedy']:>5.2f} {r['av_plain_warm_per_s']:>7,.1f} "
                     f"{r['av_roofline_ratio']:>5.2f} {r['ratios']['fast_greedy_over_plain_warm']:>7.2f} "
                     f"{'pass' if ok else 'FAIL'}")
    if "llama70b-block" in rec:
        r = rec["llama70b-block"]
        if "error" not in r:
            lines.append(f"llama70b block: {r['per_step_ms_per_block']:.2f} ms/step/block at batch {r['batch']}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models on the CPU: a smoke test of the whole script")
    ap.add_argument("--families", nargs="*", default=["qwen2.5-7b", "gemma3-12b"],
                    help=f"of {sorted(FAMILIES)} and llama70b-block")
    ap.add_argument("--out", type=Path, help="JSON to write and merge into (default bench/results/gpu_families.json)")
    ap.add_argument("--batch-cap", type=int, default=1024, help="largest AV batch (shrunk to fit memory)")
    args = ap.parse_args()
    dev = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    args.new_tokens = 12 if args.tiny else 150
    args.check_tokens = 8 if args.tiny else 48
    args.docs, args.explanations = (8, 16) if args.tiny else (384, 1024)
    args.max_tokens = 256 if args.tiny else 32768
    args.batch_cap = 8 if args.tiny else args.batch_cap
    out_path = args.out or (Path(tempfile.gettempdir()) / "gpu_families_tiny.json" if args.tiny
                            else ROOT / "bench/results/gpu_families.json")
    torch.manual_seed(0)
    t0 = time.perf_counter()
    ceil = ceilings(dev, torch.bfloat16 if dev.type == "cuda" else torch.float32, args.tiny)  # as gpu_stages
    tok = build_tokenizer()
    rec = json.loads(out_path.read_text()) if out_path.is_file() else {}
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    if rec.get("gpu", gpu) != gpu:
        raise SystemExit(f"{out_path} holds figures from {rec['gpu']}, this is {gpu}: use another --out")
    rec.update(gpu=gpu, torch=torch.__version__, transformers=__import__("transformers").__version__)
    rec.setdefault("families", {})
    rec.setdefault("runs", []).append({
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "families": args.families,
        "command": "python3 bench/gpu_families.py " + " ".join(sys.argv[1:]), "matmul_tflops": ceil["rate"] / 1e12,
        "copy_tb_s": ceil["bw"] / 1e12})
    rec["matmul_tflops"], rec["copy_tb_s"] = ceil["rate"] / 1e12, ceil["bw"] / 1e12
    rec["note"] = ("random bf16 weights at the released configs' shapes (hubs unreachable from the GPU machine); "
                   "every time is the median of 3 warm runs after a warm-up run")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for name in args.families:
        print(f"{name} ({time.perf_counter() - t0:.0f} s)", flush=True)
        try:
            if name == "llama70b-block":
                rec[name] = llama70b_block(tok, ceil, dev, args)
            else:
                fam = FAMILIES[name]
                rec["families"][name] = time_family(name, fam, tok, ceil, dev, args)
                out_path.write_text(json.dumps(rec, indent=2) + "\n")
                rec["families"][name]["checks"] = checks(fam, tok, dev, args)
        except Exception:
            import traceback

            err = {"error": traceback.format_exc()[-3000:]}
            print(err["error"], flush=True)
            home = rec if name == "llama70b-block" else rec["families"]
            if isinstance(home.get(name), dict) and "av_greedy_per_s" in home[name]:  # timings kept, checks failed
                home[name]["checks"] = {"error": err["error"], "pass": False}
            else:
                home[name] = err
            free()
        rec["seconds_last_run"] = time.perf_counter() - t0
        out_path.write_text(json.dumps(rec, indent=2) + "\n")
    print(f"wrote {out_path} ({time.perf_counter() - t0:.0f} s)")
    print(table(rec))


if __name__ == "__main__":
    main()
