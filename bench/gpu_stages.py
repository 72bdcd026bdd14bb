"""GPU stages at real size: extraction, AV and AR at the Qwen2.5-7B shape, plain path vs fast path, beside rooflines.

    python3 bench/gpu_stages.py --out $OUT/gpu_stages.json   # on the lent H100 (run tool, kind nvidia-h100-x1)
    .venv/bin/python bench/gpu_stages.py --tiny                # CPU smoke test at a tiny size (/tmp/gpu_stages_tiny.json)

One call does everything: it measures the matmul rate (bf16 8192^3) and the copy bandwidth, builds a model from the
Qwen2.5-7B-Instruct config (random bf16 weights, SDPA; no hub needed) with its AV/AR sidecars, checks that the fast
path (nla.fast_*) gives the plain path's results, and times both paths:
- extraction: blocks 0..20 over documents of web-like lengths (up to 1024 tokens), 10 positions each; tokens/s;
- AV: injected canonical prompts, 150 new tokens greedy, a batch-size sweep; explanations/s;
- AR: 21 blocks + value head over ~165-token AR inputs; explanations/s.
Each beside its roofline: FLOPs / the matmul rate, and for AV decode steps the larger of that and bytes / the copy
bandwidth. Checks: in fp32 (on an fp32 copy, TF32 off) greedy tokens must be equal and vectors equal to 1e-4; in
bf16 the agreement is recorded beside the plain path's own agreement across batch sizes. The plain path is what nla
runs today: Extractor.block_output, HFBackend (transformers generate), ARModel. Timings are model work from token ids
(extraction, AR) or from vectors (AV) to host results; tokenizing is left out of both paths alike.
The JSON keeps earlier records under `history`. Prints a table last.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nla import prompt as P  # noqa: E402
from nla.ar import ARModel  # noqa: E402
from nla.av import AVPrompter, HFBackend, SamplingParams  # noqa: E402
from nla.checkpoint import pair_metas  # noqa: E402
from nla.extract import ExtractConfig, Extractor  # noqa: E402
from nla.fast_decode import FastGreedyBackend, shared_prefix_length  # noqa: E402
from nla.fast_prefill import FastAR, FastPrefill, Ragged  # noqa: E402
from nla.meta import NLAMeta  # noqa: E402

# Qwen/Qwen2.5-7B-Instruct's config.json, the fields that shape the compute.
QWEN7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
              num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rope_theta=1_000_000.0,
              rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=False, bos_token_id=151643,
              eos_token_id=151645, use_sliding_window=False)
TINY = dict(QWEN7B, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=2048)
# Qwen2.5's chat template adds this system turn when none is given; it makes the AV prompt ~the real length.
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a "
    "helpful assistant.<|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
BF16_REL_TOL = 3e-2  # ||fast - plain|| / ||plain|| allowed in bf16 after 21 blocks (rounding differs op by op)


# ---- the machine's two ceilings ----------------------------------------------------------------------------------
def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def clock(fn, dev: torch.device):
    sync(dev)
    t0 = time.perf_counter()
    out = fn()
    sync(dev)
    return time.perf_counter() - t0, out


def ceilings(dev: torch.device, dtype: torch.dtype, tiny: bool) -> tuple[float, float]:
    """(matmul FLOP/s, copy bytes/s counting read + write): medians of 10 after 3 warm-ups, random data."""
    n = 1024 if tiny else 8192
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    x = torch.randn((16 if tiny else 512) * 2**20, device=dev)  # 64 MiB / 2 GiB of fp32
    y = torch.empty_like(x)
    rates = []
    for fn, work in ((lambda: a @ b, 2 * n**3), (lambda: y.copy_(x), 2 * x.numel() * 4)):
        for _ in range(3):
            fn()
        times = [clock(fn, dev)[0] for _ in range(10)]
        rates.append(work / float(np.median(times)))
    del a, b, x, y
    return rates[0], rates[1]


# ---- model shape arithmetic -----------------------------------------------------------------------------------------
class Shape:
    def __init__(self, cfg) -> None:
        self.d, self.hq, self.hkv = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
        self.hd, self.inter, self.vocab = self.d // self.hq, cfg.intermediate_size, cfg.vocab_size
        self.blocks = cfg.num_hidden_layers
        self.block_params = 2 * self.d * self.hq * self.hd + 2 * self.d * self.hkv * self.hd + 3 * self.d * self.inter

    def prefill_flops(self, lengths: np.ndarray, blocks: int) -> float:
        """Linear layers + causal attention (QK and PV over the keys each token sees) of each sequence."""
        L = np.asarray(lengths, dtype=np.float64)
        return float((2 * self.block_params * blocks * L + blocks * 2 * self.hq * self.hd * L * (L + 1)).sum())

    def av_floor_s(self, B: int, Lp: int, Ts: int, new: int, rate: float, bw: float) -> float:
        """Least time for one AV batch: the prefix once, each row's suffix, then per decode step the larger of its
        FLOPs / rate and its bytes / bandwidth (weights once, the shared prefix's KV once, each row's own KV)."""
        n = self.blocks
        t = self.prefill_flops(np.array([Lp]), n) / rate
        keys = Lp + np.arange(1, Ts + 1)
        suffix = 2 * self.block_params * n * Ts + n * 4 * self.hq * self.hd * keys.sum() + 2 * self.d * self.vocab
        t += B * suffix / rate
        weight_bytes = 2 * (self.block_params * n + self.d * self.vocab)
        kv_per_pos = n * 2 * self.hkv * self.hd * 2
        for s in range(1, new):
            flops = B * (2 * self.block_params * n + 2 * self.d * self.vocab + n * 4 * self.hq * self.hd * (Lp + Ts + s))
            nbytes = weight_bytes + kv_per_pos * (Lp + B * (Ts + s))
            t += max(flops / rate, nbytes / bw)
        return t


# ---- building the model, tokenizer and sidecars -------------------------------------------------------------------
def build_tokenizer():
    from nla.toy.corpus import generate_corpus, vocabulary_texts
    from nla.toy.tokenizer import train_tokenizer

    texts = [d.text for d in generate_corpus(200, 3)] + vocabulary_texts()
    texts += [P.DEFAULT_AV_TEMPLATE.format(injection_char=""), P.DEFAULT_AR_TEMPLATE, CHAT_TEMPLATE] * 50
    tok = train_tokenizer(texts, vocab_size=2000)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_model(cfg_fields: dict, dev: torch.device, dtype: torch.dtype, n_blocks: int | None = None):
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config(**{**cfg_fields, "num_hidden_layers": n_blocks or cfg_fields["num_hidden_layers"]})
    cfg._attn_implementation = "sdpa"
    with torch.device(dev):
        return AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()


def as_fp32(model, cfg_fields: dict, dev: torch.device):
    """An fp32 copy with the same weights, for the exact checks."""
    m32 = build_model(cfg_fields, dev, torch.float32, model.config.num_hidden_layers)
    missing, unexpected = m32.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight", "model.norm.weight"}, (missing, unexpected)
    return m32  # an AR's lm has no norm or lm_head (identity): ARModel replaces them again


def sidecars(tokenizer, d: int, layer: int, folder: Path) -> tuple[NLAMeta, NLAMeta]:
    """AV/AR sidecars made for this tokenizer (marker, neighbours, templates), written and read back validated."""
    av, ar = pair_metas(tokenizer, d_model=d, layer=layer, injection_scale=150.0,
                        base_checkpoint="Qwen/Qwen2.5-7B-Instruct (shape only, random weights)")
    metas = []
    for role, meta in (("av", av), ("ar", ar)):
        meta.save(folder / role)
        loaded = NLAMeta.load(folder / role)
        loaded.validate(tokenizer)
        metas.append(loaded)
    return metas[0], metas[1]


# ---- workloads --------------------------------------------------------------------------------------------------------
def documents(rng: np.random.Generator, n: int, vocab: int, tiny: bool) -> tuple[Ragged, np.ndarray, np.ndarray]:
    """Web-like lengths (log-normal, median ~700 tokens, cut at 1024 as the job's max_length), 10 positions each."""
    lo, hi, med, first = (16, 96, 48, 5) if tiny else (64, 1024, 700, 50)
    lengths = np.clip(rng.lognormal(math.log(med), 0.8, n), lo, hi).astype(np.int64)
    seqs = Ragged(rng.integers(0, vocab, int(lengths.sum())), lengths)
    picks = [np.sort(rng.choice(np.arange(first, L), min(10, L - first), replace=False)) for L in lengths]
    rows = np.repeat(np.arange(n), [len(p) for p in picks])
    return seqs, rows, np.concatenate(picks)


def ar_inputs(rng: np.random.Generator, n: int, vocab: int, tiny: bool) -> Ragged:
    """AR inputs of ~165 tokens: ~150-token explanations inside the template."""
    mean, sd, lo, hi = (24, 4, 8, 40) if tiny else (165, 25, 80, 260)
    lengths = np.clip(rng.normal(mean, sd, n), lo, hi).astype(np.int64)
    return Ragged(rng.integers(0, vocab, int(lengths.sum())), lengths)


# ---- the plain path, as nla runs it today ----------------------------------------------------------------------------
def plain_hidden_at(extractor: Extractor, seqs: Ragged, rows: np.ndarray, positions: np.ndarray,
                    batch: int) -> torch.Tensor:
    """Extractor.block_output on batches of `batch` documents in arrival order, right padded with a mask."""
    out = []
    dev = extractor.blocks[0].mlp.down_proj.weight.device
    for start in range(0, len(seqs.lengths), batch):
        members = np.arange(start, min(start + batch, len(seqs.lengths)))
        width = int(seqs.lengths[members].max())
        ids = torch.from_numpy(seqs.padded(members, width, 0))
        mask = torch.from_numpy((np.arange(width)[None] < seqs.lengths[members][:, None]).astype(np.int64))
        h = extractor.block_output(ids, mask)  # (B, T, d)
        sel = (rows >= start) & (rows < start + len(members))
        r = torch.from_numpy(rows[sel] - start).to(dev)
        out.append(h[r, torch.from_numpy(positions[sel]).to(dev)].float())
    return torch.cat(out).cpu()


def plain_ar(ar: ARModel, seqs: Ragged, batch: int) -> torch.Tensor:
    out = []
    dev = ar.value_head.weight.device
    for start in range(0, len(seqs.lengths), batch):
        members = np.arange(start, min(start + batch, len(seqs.lengths)))
        width = int(seqs.lengths[members].max())
        ids = torch.from_numpy(seqs.padded(members, width, 0)).to(dev)
        mask = torch.from_numpy((np.arange(width)[None] < seqs.lengths[members][:, None]).astype(np.int64)).to(dev)
        with torch.inference_mode():
            out.append(ar(ids, mask).float())
    return torch.cat(out).cpu()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> dict:
    e = (a - b).norm(dim=-1) / b.norm(dim=-1).clamp_min(1e-12)
    return {"max_rel_err": float(e.max()), "mean_rel_err": float(e.mean())}


def mse_nrm_gap(a: torch.Tensor, b: torch.Tensor, target: torch.Tensor, scale: float) -> float:
    """|mse_nrm(a, target) - mse_nrm(b, target)| averaged: what a score would move by."""
    from nla.metrics import mse_nrm

    return float((mse_nrm(a, target, scale) - mse_nrm(b, target, scale)).abs().mean())


def agreement(a: list, b: list) -> dict:
    """Rows with identical token lists, and mean common-prefix length."""
    same = sum(x[0] == y[0] for x, y in zip(a, b))
    common = [next((i for i, (s, t) in enumerate(zip(x[0], y[0])) if s != t), min(len(x[0]), len(y[0])))
              for x, y in zip(a, b)]
    return {"rows": len(a), "identical_rows": same, "mean_common_prefix_tokens": float(np.mean(common))}


# ---- the three stages ---------------------------------------------------------------------------------------------------
def run_checks(model, ar_model, cfg_fields, tok, av_meta, ar_meta, eos, dev, args, rng) -> dict:
    """fp32 (TF32 off): the fast path must give the plain path's greedy tokens and vectors."""
    torch.backends.cuda.matmul.allow_tf32 = False
    out = {}
    m32 = model if model.dtype == torch.float32 else as_fp32(model, cfg_fields, dev)
    prompter = AVPrompter(m32.get_input_embeddings(), tok, av_meta)
    vectors = torch.randn(args.check_vectors, m32.config.hidden_size, generator=torch.Generator().manual_seed(7))
    params = SamplingParams(temperature=0, max_new_tokens=args.new_tokens)
    embeds = prompter.prompt_embeds(vectors)
    plain = HFBackend(m32, tok, eos).generate(embeds, params)
    fast = FastGreedyBackend(m32, tok, eos).generate(embeds, params)
    out["av_fp32"] = {**agreement(fast, plain), "new_tokens": args.new_tokens,
                      "pass": all(f == p for f, p in zip(fast, plain))}
    seqs, rows, pos = documents(rng, 8, m32.config.vocab_size, args.tiny)
    ex = Extractor(m32, tok, ExtractConfig(layer=args.layer))
    err = rel_err(FastPrefill(m32, n_blocks=args.layer + 1).hidden_at(seqs, rows, pos),
                  plain_hidden_at(ex, seqs, rows, pos, 4))
    out["extraction_fp32"] = {**err, "pass": err["max_rel_err"] < 1e-4}
    del m32, prompter, embeds, ex
    torch.cuda.empty_cache() if dev.type == "cuda" else None
    a32 = ar_model if ar_model.value_head.weight.dtype == torch.float32 else \
        ARModel(as_fp32(ar_model.lm, cfg_fields, dev)).to(dev)
    if a32 is not ar_model:
        a32.value_head.load_state_dict(ar_model.value_head.state_dict())
    seqs = ar_inputs(rng, 16, model.config.vocab_size, args.tiny)
    err = rel_err(FastAR(a32).reconstruct_ids(seqs), plain_ar(a32, seqs, 8))
    out["ar_fp32"] = {**err, "pass": err["max_rel_err"] < 1e-4}
    del a32
    torch.cuda.empty_cache() if dev.type == "cuda" else None
    return out


def bench_extraction(model, tok, shape: Shape, rate: float, dev, args, rng) -> dict:
    n_blocks = args.layer + 1
    ex = Extractor(model, tok, ExtractConfig(layer=args.layer))
    fast = FastPrefill(model, n_blocks=n_blocks, max_tokens=args.max_tokens)
    seqs, rows, pos = documents(rng, args.docs, model.config.vocab_size, args.tiny)
    warm = Ragged(seqs.values[:int(seqs.lengths[:16].sum())], seqs.lengths[:16])
    plain_hidden_at(ex, warm, rows[rows < 16], pos[rows < 16], 8)
    fast.hidden_at(warm, rows[rows < 16], pos[rows < 16])  # compiles the fused kernels
    real_tokens = int(seqs.lengths.sum())
    floor = shape.prefill_flops(seqs.lengths, n_blocks) / rate
    t_plain, v_plain = min((clock(lambda: plain_hidden_at(ex, seqs, rows, pos, 32), dev) for _ in range(2)),
                           key=lambda x: x[0])
    t_fast, v_fast = min((clock(lambda: fast.hidden_at(seqs, rows, pos), dev) for _ in range(3)), key=lambda x: x[0])
    # The reference shape: 32 x 512 tokens, no padding.
    width = 16 if args.tiny else 512
    uni = Ragged(rng.integers(0, shape.vocab, 32 * width), np.full(32, width, np.int64))
    u_rows, u_pos = np.arange(32), np.full(32, 10)
    t_uni = min(clock(lambda: plain_hidden_at(ex, uni, u_rows, u_pos, 32), dev)[0] for _ in range(3))
    uni_floor = shape.prefill_flops(uni.lengths, n_blocks) / rate

    def rec(path, t, fl, tokens, batch):
        return {"path": path, "batch": batch, "seconds": t, "throughput": tokens / t, "tokens_per_s": tokens / t,
                "roofline": tokens / fl, "roofline_ratio": fl / t}

    after = rec("fast (nla.fast_prefill)", t_fast, floor, real_tokens, f"<= {args.max_tokens} padded tokens")
    return {"unit": "tokens/s", **after,
            "before": rec("plain (Extractor.block_output)", t_plain, floor, real_tokens, "32 documents"),
            "plain_uniform_32x512": rec("plain (Extractor.block_output)", t_uni, uni_floor, int(uni.lengths.sum()),
                                        "32 x 512"),
            "workload": {"documents": args.docs, "real_tokens": real_tokens, "vectors": len(rows),
                         "mean_length": float(seqs.lengths.mean()), "max_length": int(seqs.lengths.max()),
                         "blocks": n_blocks},
            "agreement_bf16": {**rel_err(v_fast, v_plain), "tolerance": BF16_REL_TOL,
                               "pass": rel_err(v_fast, v_plain)["max_rel_err"] < BF16_REL_TOL}}


def bench_ar(ar: ARModel, shape: Shape, rate: float, dev, args, rng, mse_scale: float) -> dict:
    n_blocks = len(ar.backbone.layers)
    fast = FastAR(ar, max_tokens=args.max_tokens)
    seqs = ar_inputs(rng, args.explanations, shape.vocab, args.tiny)
    warm = Ragged(seqs.values[:int(seqs.lengths[:16].sum())], seqs.lengths[:16])
    plain_ar(ar, warm, 8)
    fast.reconstruct_ids(warm)
    floor = (shape.prefill_flops(seqs.lengths, n_blocks) + len(seqs.lengths) * 2 * shape.d ** 2) / rate
    n = len(seqs.lengths)
    t_plain, r_plain = min((clock(lambda: plain_ar(ar, seqs, 256), dev) for _ in range(2)), key=lambda x: x[0])
    t_fast, r_fast = min((clock(lambda: fast.reconstruct_ids(seqs), dev) for _ in range(3)), key=lambda x: x[0])
    width = 24 if args.tiny else 165
    uni = Ragged(rng.integers(0, shape.vocab, 256 * width), np.full(256, width, np.int64))
    t_uni = min(clock(lambda: plain_ar(ar, uni, 256), dev)[0] for _ in range(3))
    uni_floor = (shape.prefill_flops(uni.lengths, n_blocks) + 256 * 2 * shape.d ** 2) / rate

    def rec(path, t, fl, rows, batch):
        return {"path": path, "batch": batch, "seconds": t, "throughput": rows / t, "explanations_per_s": rows / t,
                "roofline": rows / fl, "roofline_ratio": fl / t}

    targets = torch.randn(n, shape.d, generator=torch.Generator().manual_seed(3))
    err = rel_err(r_fast, r_plain)
    return {"unit": "explanations/s", **rec("fast (nla.fast_prefill.FastAR)", t_fast, floor, n,
                                            f"<= {args.max_tokens} padded tokens"),
            "before": rec("plain (ARModel)", t_plain, floor, n, "256 rows"),
            "plain_uniform_256x165": rec("plain (ARModel)", t_uni, uni_floor, 256, f"256 x {width}"),
            "workload": {"explanations": n, "mean_tokens": float(seqs.lengths.mean()), "blocks": n_blocks},
            "agreement_bf16": {**err, "mse_nrm_mean_abs_diff": mse_nrm_gap(r_fast, r_plain, targets, mse_scale),
                               "tolerance": BF16_REL_TOL, "pass": err["max_rel_err"] < BF16_REL_TOL}}


def bench_av(model, tok, av_meta, eos, shape: Shape, rate: float, bw: float, dev, args) -> dict:
    prompter = AVPrompter(model.get_input_embeddings(), tok, av_meta)
    params = SamplingParams(temperature=0, max_new_tokens=args.new_tokens)
    d = model.config.hidden_size
    T = len(prompter.canonical_ids)
    Lp = shared_prefix_length(torch.stack(prompter.prompt_embeds(torch.randn(2, d))))
    Ts = T - Lp

    def vectors(n, seed):
        return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))

    def run(backend, v):
        return backend.generate(prompter.prompt_embeds(v), params)

    sweep, outs = [], {}
    plain = HFBackend(model, tok, eos)
    plain.generate(prompter.prompt_embeds(vectors(8, 0)), SamplingParams(temperature=0, max_new_tokens=8))  # warm-up
    big = vectors(max(args.plain_batches + args.fast_batches), 1)
    for path, backend, sizes in (("plain", plain, args.plain_batches),
                                 ("fast", FastGreedyBackend(model, tok, eos), args.fast_batches)):
        for B in sizes:
            if path == "fast":
                run(backend, vectors(B, 2))  # captures this batch size's graphs
            t, res = clock(lambda: run(backend, big[:B]), dev)
            outs[(path, B)] = res
            floor = shape.av_floor_s(B, Lp, Ts, args.new_tokens, rate, bw)
            new = float(np.mean([len(r[0]) for r in res]))
            sweep.append({"path": path, "batch_size": B, "seconds": t, "explanations_per_s": B / t,
                          "tokens_per_s": B * new / t, "mean_new_tokens": new, "roofline": B / floor,
                          "roofline_ratio": floor / t})
            print(f"  av {path:5s} batch {B:5d}: {B / t:8.1f} explanations/s", flush=True)
    best = {p: max((s for s in sweep if s["path"] == p), key=lambda s: s["explanations_per_s"])
            for p in ("plain", "fast")}
    pb = args.plain_batches
    agree = {f"fast_vs_plain_batch_{B}": agreement(outs[("fast", B)], outs[("plain", B)])
             for B in pb if B in args.fast_batches}
    if len(pb) > 1:
        agree[f"plain_batch_{pb[0]}_vs_plain_batch_{pb[-1]}"] = agreement(outs[("plain", pb[0])],
                                                                           outs[("plain", pb[-1])][:pb[0]])
    limit = rate / (2 * (shape.block_params * shape.blocks + shape.d * shape.vocab) * args.new_tokens
                    + 2 * shape.block_params * shape.blocks * Ts)
    b = best["fast"]
    return {"unit": "explanations/s", "path": "fast (nla.fast_decode.FastGreedyBackend)",
            "throughput": b["explanations_per_s"], "explanations_per_s": b["explanations_per_s"],
            "batch_size": b["batch_size"], "roofline": b["roofline"], "roofline_ratio": b["roofline_ratio"],
            "before": {**best["plain"], "path": "plain (HFBackend: transformers generate)",
                       "throughput": best["plain"]["explanations_per_s"]},
            "compute_bound_explanations_per_s": limit, "new_tokens": args.new_tokens, "prompt_tokens": T,
            "shared_prefix_tokens": Lp, "sweep": sweep, "agreement_bf16": agree}


def profile(model, ar, tok, av_meta, eos, dev, args, rng, path: Path) -> dict:
    """Top kernels of one fast extraction pass, one fast AR pass and eager decode steps (batch 256): where time goes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    sort = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    seqs, rows, pos = documents(rng, 48, model.config.vocab_size, args.tiny)
    fast = FastPrefill(model, n_blocks=args.layer + 1, max_tokens=args.max_tokens)
    ar_in = ar_inputs(rng, 256, model.config.vocab_size, args.tiny)
    fast_ar = FastAR(ar, max_tokens=args.max_tokens)
    backend = FastGreedyBackend(model, tok, eos, graphs=False)
    prompter = AVPrompter(model.get_input_embeddings(), tok, av_meta)
    B = 8 if args.tiny else 256
    embeds = prompter.prompt_embeds(torch.randn(B, model.config.hidden_size))
    few = SamplingParams(temperature=0, max_new_tokens=4)
    jobs = {"extraction": lambda: fast.hidden_at(seqs, rows, pos), "ar": lambda: fast_ar.reconstruct_ids(ar_in),
            f"av decode, batch {B}, 4 tokens, eager": lambda: backend.generate(embeds, few)}
    text = []
    for name, fn in jobs.items():
        fn()
        sync(dev)
        with torch_profile(activities=acts) as prof:
            fn()
            sync(dev)
        text.append(f"==== {name}\n" + prof.key_averages().table(sort_by=sort, row_limit=25))
    path.write_text("\n".join(text))
    return {"written": str(path)}


# ---- output -----------------------------------------------------------------------------------------------------------
def table(rec: dict) -> str:
    lines = [f"GPU: {rec['gpu']}   matmul {rec['matmul_tflops']:.0f} TFLOP/s   copy {rec['copy_tb_s']:.2f} TB/s",
             f"{'stage':11s} {'path':6s} {'batch':>24s} {'throughput':>22s} {'roofline':>12s} {'ratio':>6s}"]

    def row(stage, r, unit, batch=None):
        path = r["path"].split(" ")[0]
        lines.append(f"{stage:11s} {path:6s} {str(batch or r.get('batch', r.get('batch_size'))):>24s} "
                     f"{r['throughput']:>12,.1f} {unit:9s} {r['roofline']:>12,.1f} {r['roofline_ratio']:>6.2f}")

    ex, ar, av = rec["extraction"], rec["ar"], rec["av"]
    row("extraction", ex["plain_uniform_32x512"], "tokens/s")
    row("extraction", ex["before"], "tokens/s")
    row("extraction", ex, "tokens/s")
    row("ar", ar["plain_uniform_256x165"], "expl/s")
    row("ar", ar["before"], "expl/s")
    row("ar", ar, "expl/s")
    for s in av["sweep"]:
        row("av", {**s, "throughput": s["explanations_per_s"]}, "expl/s", s["batch_size"])
    checks = rec["checks"]
    lines.append("checks: " + ", ".join(f"{k} {'pass' if v['pass'] else 'FAIL'}" for k, v in checks.items())
                 + f"; bf16 extraction max rel err {ex['agreement_bf16']['max_rel_err']:.1e}"
                 + f", ar {ar['agreement_bf16']['max_rel_err']:.1e}")
    for k, v in av["agreement_bf16"].items():
        lines.append(f"  av bf16 {k}: {v['identical_rows']}/{v['rows']} identical, "
                     f"mean common prefix {v['mean_common_prefix_tokens']:.0f} tokens")
    goals = rec["goals"]
    lines.append("goals: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in goals.items()))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny model on the CPU: a smoke test of the whole script")
    ap.add_argument("--out", type=Path, help="JSON to write (default bench/results/gpu_stages.json; tiny: /tmp)")
    ap.add_argument("--history", type=Path, default=ROOT / "bench/results/gpu_stages.json",
                    help="earlier record whose entries are kept under `history`")
    ap.add_argument("--profile", action="store_true", help="also write a per-kernel profile of each fast stage")
    args = ap.parse_args()
    dev = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
    cfg_fields = TINY if args.tiny else QWEN7B
    args.layer = 2 if args.tiny else 20
    args.new_tokens = 12 if args.tiny else 150
    args.docs, args.explanations = (12, 16) if args.tiny else (384, 1024)
    args.check_vectors = 4 if args.tiny else 16
    args.max_tokens = 256 if args.tiny else 32768
    args.plain_batches = [4, 8] if args.tiny else [64, 256]
    args.fast_batches = [4, 8] if args.tiny else [64, 128, 256, 512, 1024]
    out_path = args.out or (Path(tempfile.gettempdir()) / "gpu_stages_tiny.json" if args.tiny
                            else ROOT / "bench/results/gpu_stages.json")
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    t_start = time.perf_counter()

    rate, bw = ceilings(dev, dtype, args.tiny)
    print(f"matmul {rate / 1e12:.1f} TFLOP/s, copy {bw / 1e12:.3f} TB/s", flush=True)
    tok = build_tokenizer()
    model = build_model(cfg_fields, dev, dtype)
    shape = Shape(model.config)
    with tempfile.TemporaryDirectory() as tmp:
        av_meta, ar_meta = sidecars(tok, shape.d, args.layer, Path(tmp))
    eos = {tok.eos_token_id, model.config.eos_token_id}
    ar = ARModel(build_model(cfg_fields, dev, dtype, args.layer + 1)).to(dev).eval()
    print(f"models built ({time.perf_counter() - t_start:.0f} s)", flush=True)

    rec = {"gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({os.cpu_count()} cores)",
           "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "command": "python3 bench/gpu_stages.py" + (" --tiny" if args.tiny else ""),
           "torch": torch.__version__, "transformers": __import__("transformers").__version__,
           "dtype": str(dtype).removeprefix("torch."), "matmul_tflops": rate / 1e12, "copy_tb_s": bw / 1e12,
           "model": {"config": "Qwen2.5-7B-Instruct" if not args.tiny else "tiny Qwen2", "random_weights": True,
                     "d_model": shape.d, "blocks": shape.blocks, "layer": args.layer, "attn": "sdpa",
                     "injection_scale": av_meta.injection_scale, "marker": av_meta.tokens.injection_char},
           }
    history = []
    if args.history.is_file() and not args.tiny:
        old = json.loads(args.history.read_text())
        history = old.pop("history", []) + [old]
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def stage(name, fn):
        """Run one part; a failure is recorded (with its traceback) and the rest still runs."""
        try:
            rec[name] = fn()
        except Exception:
            import traceback

            rec[name] = {"error": traceback.format_exc()[-3000:]}
            print(rec[name]["error"], flush=True)
        rec["seconds_total"] = time.perf_counter() - t_start
        if dev.type == "cuda":
            rec["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
        out_path.write_text(json.dumps({**rec, "history": history}, indent=2) + "\n")
        print(f"{name} done ({rec['seconds_total']:.0f} s)", flush=True)

    stage("checks", lambda: run_checks(model, ar, cfg_fields, tok, av_meta, ar_meta, eos, dev, args, rng))
    stage("extraction", lambda: bench_extraction(model, tok, shape, rate, dev, args, rng))
    stage("ar", lambda: bench_ar(ar, shape, rate, dev, args, rng, float(ar_meta.mse_scale)))
    if args.profile:
        stage("profile", lambda: profile(model, ar, tok, av_meta, eos, dev, args, rng,
                                         out_path.parent / "gpu_stages_profile.txt"))
    del ar
    stage("av", lambda: bench_av(model, tok, av_meta, eos, shape, rate, bw, dev, args))
    rec["goals"] = {"extraction >= 0.80 of roofline": rec["extraction"].get("roofline_ratio", 0) >= 0.80,
                    "ar >= 0.80 of roofline": rec["ar"].get("roofline_ratio", 0) >= 0.80,
                    "av >= 150 explanations/s": rec["av"].get("explanations_per_s", 0) >= 150}
    out_path.write_text(json.dumps({**rec, "history": history}, indent=2) + "\n")
    print(f"wrote {out_path}")
    print(table(rec))


if __name__ == "__main__":
    main()
