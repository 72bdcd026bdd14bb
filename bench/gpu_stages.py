"""GPU stages at real size: extraction, AV and AR at the Qwen2.5-7B shape, plain path vs fast path, beside rooflines.

    python3 bench/gpu_stages.py --out $OUT/gpu_stages.json   # on the lent H100 (run tool, kind nvidia-h100-x1)
    .venv/bin/python bench/gpu_stages.py --tiny                # CPU smoke test, tiny (/tmp/gpu_stages_tiny.json)

One call does everything: it measures the matmul rate (bf16 8192^3) and the copy bandwidth, builds a model from the
Qwen2.5-7B-Instruct config (random bf16 weights, SDPA; no hub needed) with its AV/AR sidecars, checks that the fast
path (nla.fast) gives the plain path's results, and times both paths:
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
from nla.extract import Extractor  # noqa: E402
from nla.extract_config import ExtractConfig  # noqa: E402
from nla.fast.decode import FastBackend, shared_prefix_length  # noqa: E402
from nla.fast.prefill import FastAR, FastPrefill, Ragged  # noqa: E402
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


# ---- the machine's two ceilings -----------------------------------------------------------------------------------
def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def clock(fn, dev: torch.device):
    sync(dev)
    t0 = time.perf_counter()
    out = fn()
    sync(dev)
    return time.perf_counter() - t0, out


def rate_of(fn, work: float, dev: torch.device, sustain_s: float) -> tuple[float, float]:
    """(burst, sustained) rate of fn: burst = median of 10 after 3 warm-ups (how the issue measured); sustained =
    back to back for ~sustain_s, long enough for clocks to settle as they do in a multi-second stage."""
    for _ in range(3):
        fn()
    times = [clock(fn, dev)[0] for _ in range(10)]
    burst = work / float(np.median(times))
    reps = max(10, int(sustain_s / float(np.median(times))))
    def repeat():
        for _ in range(reps):
            fn()  # results dropped at once: the allocator reuses one buffer

    t, _ = clock(repeat, dev)
    return burst, work * reps / t


def ceilings(dev: torch.device, dtype: torch.dtype, tiny: bool) -> dict:
    """The matmul rate (bf16 8192^3, random data), the copy bandwidth (read + write counted), and for reference the
    model's own GEMM shapes."""
    n = 1024 if tiny else 8192
    sustain = 0.2 if tiny else 2.0
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    rate, rate_sustained = rate_of(lambda: a @ b, 2 * n**3, dev, sustain)
    clock_mhz = None
    if dev.type == "cuda":
        try:
            clock_mhz = torch.cuda.clock_rate(dev)  # SM clock just after the sustained run (pynvml)
        except Exception:  # noqa: BLE001 - a missing NVML only loses this note
            pass
    x = torch.randn((16 if tiny else 512) * 2**20, device=dev)  # 64 MiB / 2 GiB of fp32
    y = torch.empty_like(x)
    bw, _ = rate_of(lambda: y.copy_(x), 2 * x.numel() * 4, dev, 0.0)
    del a, b, x, y
    shapes = {}
    if not tiny:
        for name, (M, K, N) in {"prefill gate/up 32768x3584->18944": (32768, 3584, 18944),
                                "prefill down 32768x18944->3584": (32768, 18944, 3584),
                                "decode gate/up 1024x3584->18944": (1024, 3584, 18944),
                                "decode gate/up 256x3584->18944": (256, 3584, 18944)}.items():
            xm = torch.randn(M, K, device=dev, dtype=dtype)
            w = torch.randn(N, K, device=dev, dtype=dtype) / K**0.5
            burst, sus = rate_of(lambda: torch.nn.functional.linear(xm, w), 2 * M * K * N, dev, 1.0)
            shapes[name] = {"burst_tflops": burst / 1e12, "sustained_tflops": sus / 1e12}
            del xm, w
    return {"rate": rate, "rate_sustained": rate_sustained, "bw": bw, "sm_clock_mhz_after_sustained": clock_mhz,
            "gemm_shapes": shapes}


# ---- model shape arithmetic ---------------------------------------------------------------------------------------
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
            attention = n * 4 * self.hq * self.hd * (Lp + Ts + s)
            flops = B * (2 * self.block_params * n + 2 * self.d * self.vocab + attention)
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


# ---- workloads ----------------------------------------------------------------------------------------------------
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


# ---- the plain path, as nla runs it today -------------------------------------------------------------------------
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


# ---- the three stages ---------------------------------------------------------------------------------------------
def rec(path: str, t: float, flops: float, items: float, batch: str, unit_key: str, ceil: dict) -> dict:
    """One measurement beside its roofline: FLOPs / the matmul rate (burst; the sustained rate alongside)."""
    return {"path": path, "batch": batch, "seconds": t, "throughput": items / t, unit_key: items / t,
            "roofline": items * ceil["rate"] / flops, "roofline_ratio": flops / ceil["rate"] / t,
            "roofline_ratio_sustained_matmul": flops / ceil["rate_sustained"] / t}


def run_checks(model, ar_model, cfg_fields, tok, av_meta, eos, dev, args, rng) -> dict:
    """fp32 (TF32 off): the fast path must give the plain path's greedy tokens, and its vectors to 1e-4. bf16: each
    path's distance from those fp32 answers; the fast path must be no further from them than the plain path."""
    torch.backends.cuda.matmul.allow_tf32 = False
    out, ref = {}, {}
    g = torch.Generator().manual_seed(7)
    vectors = torch.randn(args.check_vectors, model.config.hidden_size, generator=g)
    params = SamplingParams(temperature=0, max_new_tokens=args.new_tokens)
    docs = documents(rng, 16, model.config.vocab_size, args.tiny)
    ar_seqs = ar_inputs(rng, 64, model.config.vocab_size, args.tiny)
    ex_cfg = ExtractConfig(layer=args.layer)

    def part(name, fn):
        try:
            out[name] = fn()
        except Exception:
            import traceback

            out[name] = {"error": traceback.format_exc()[-3000:], "pass": False}
            print(out[name]["error"], flush=True)

    def av_paths(m):
        embeds = AVPrompter(m.get_input_embeddings(), tok, av_meta).prompt_embeds(vectors)
        return (HFBackend(m, tok, eos).generate(embeds, params),
                FastBackend(m, tok, eos).generate(embeds, params))

    def ex_paths(m):
        plain = plain_hidden_at(Extractor(m, tok, ex_cfg, device=str(dev)), *docs, 4)
        return plain, FastPrefill(m, n_blocks=args.layer + 1).hidden_at(*docs)

    def ar_paths(a):
        return plain_ar(a, ar_seqs, 16), FastAR(a).reconstruct_ids(ar_seqs)

    def exact(name, paths):
        def fn():
            plain, fast = paths()
            ref[name] = plain
            if isinstance(plain, list):
                return {**agreement(fast, plain), "new_tokens": args.new_tokens, "pass": fast == plain}
            err = rel_err(fast, plain)
            return {**err, "pass": err["max_rel_err"] < 1e-4}
        return fn

    def near(name, paths):
        def fn():
            plain, fast = paths()
            if isinstance(plain, list):  # greedy tokens: how long each path follows the fp32 answer
                return {"plain_vs_fp32": agreement(plain, ref[name]), "fast_vs_plain": agreement(fast, plain),
                        "fast_vs_fp32": agreement(fast, ref[name])}
            e_plain, e_fast = rel_err(plain, ref[name]), rel_err(fast, ref[name])
            return {"plain_vs_fp32": e_plain, "fast_vs_fp32": e_fast, "fast_vs_plain": rel_err(fast, plain),
                    "pass": e_fast["mean_rel_err"] <= 1.25 * e_plain["mean_rel_err"] + 1e-4}
        return fn

    fp32 = model.dtype == torch.float32
    m32 = model if fp32 else as_fp32(model, cfg_fields, dev)
    part("av_fp32", exact("av", lambda: av_paths(m32)))
    part("extraction_fp32", exact("extraction", lambda: ex_paths(m32)))
    del m32
    torch.cuda.empty_cache() if dev.type == "cuda" else None
    a32 = ar_model
    if not fp32:
        a32 = ARModel(as_fp32(ar_model.lm, cfg_fields, dev)).to(dev)
        a32.value_head.load_state_dict(ar_model.value_head.state_dict())
    part("ar_fp32", exact("ar", lambda: ar_paths(a32)))
    del a32
    torch.cuda.empty_cache() if dev.type == "cuda" else None
    part("extraction_bf16_vs_fp32", near("extraction", lambda: ex_paths(model)))
    part("ar_bf16_vs_fp32", near("ar", lambda: ar_paths(ar_model)))
    part("av_bf16_vs_fp32", near("av", lambda: av_paths(model)))
    return out


def bench_extraction(model, tok, shape: Shape, ceil: dict, dev, args, rng) -> dict:
    n_blocks = args.layer + 1
    ex = Extractor(model, tok, ExtractConfig(layer=args.layer), device=str(dev))
    fast = FastPrefill(model, n_blocks=n_blocks, max_tokens=args.max_tokens)
    seqs, rows, pos = documents(rng, args.docs, model.config.vocab_size, args.tiny)
    warm = Ragged(seqs.values[:int(seqs.lengths[:16].sum())], seqs.lengths[:16])
    plain_hidden_at(ex, warm, rows[rows < 16], pos[rows < 16], 8)
    fast.hidden_at(warm, rows[rows < 16], pos[rows < 16])  # compiles the fused kernels
    real_tokens = int(seqs.lengths.sum())
    flops = shape.prefill_flops(seqs.lengths, n_blocks)
    t_plain, v_plain = min((clock(lambda: plain_hidden_at(ex, seqs, rows, pos, 32), dev) for _ in range(2)),
                           key=lambda x: x[0])
    t_fast, v_fast = min((clock(lambda: fast.hidden_at(seqs, rows, pos), dev) for _ in range(3)), key=lambda x: x[0])
    # The reference shape: 32 x 512 tokens, no padding.
    width = 16 if args.tiny else 512
    uni = Ragged(rng.integers(0, shape.vocab, 32 * width), np.full(32, width, np.int64))
    t_uni = min(clock(lambda: plain_hidden_at(ex, uni, np.arange(32), np.full(32, 10), 32), dev)[0]
                for _ in range(3))
    plain = "plain (Extractor.block_output)"
    return {"unit": "tokens/s",
            **rec("fast (nla.fast.prefill)", t_fast, flops, real_tokens, f"<= {args.max_tokens} padded tokens",
                  "tokens_per_s", ceil),
            "before": rec(plain, t_plain, flops, real_tokens, "32 documents", "tokens_per_s", ceil),
            "plain_uniform_32x512": rec(plain, t_uni, shape.prefill_flops(uni.lengths, n_blocks),
                                        int(uni.lengths.sum()), f"32 x {width}", "tokens_per_s", ceil),
            "workload": {"documents": args.docs, "real_tokens": real_tokens, "vectors": len(rows),
                         "mean_length": float(seqs.lengths.mean()), "max_length": int(seqs.lengths.max()),
                         "blocks": n_blocks},
            "fast_vs_plain_bf16": rel_err(v_fast, v_plain)}


def bench_ar(ar: ARModel, shape: Shape, ceil: dict, dev, args, rng, mse_scale: float) -> dict:
    n_blocks = len(ar.backbone.layers)
    fast = FastAR(ar, max_tokens=args.max_tokens)
    seqs = ar_inputs(rng, args.explanations, shape.vocab, args.tiny)
    warm = Ragged(seqs.values[:int(seqs.lengths[:16].sum())], seqs.lengths[:16])
    plain_ar(ar, warm, 8)
    fast.reconstruct_ids(warm)
    n = len(seqs.lengths)
    flops = shape.prefill_flops(seqs.lengths, n_blocks) + n * 2 * shape.d ** 2
    t_plain, r_plain = min((clock(lambda: plain_ar(ar, seqs, 256), dev) for _ in range(2)), key=lambda x: x[0])
    t_fast, r_fast = min((clock(lambda: fast.reconstruct_ids(seqs), dev) for _ in range(3)), key=lambda x: x[0])
    width = 24 if args.tiny else 165
    uni = Ragged(rng.integers(0, shape.vocab, 256 * width), np.full(256, width, np.int64))
    t_uni = min(clock(lambda: plain_ar(ar, uni, 256), dev)[0] for _ in range(3))
    targets = torch.randn(n, shape.d, generator=torch.Generator().manual_seed(3))
    return {"unit": "explanations/s",
            **rec("fast (nla.fast.prefill.FastAR)", t_fast, flops, n, f"<= {args.max_tokens} padded tokens",
                  "explanations_per_s", ceil),
            "before": rec("plain (ARModel)", t_plain, flops, n, "256 rows", "explanations_per_s", ceil),
            "plain_uniform_256x165": rec("plain (ARModel)", t_uni,
                                         shape.prefill_flops(uni.lengths, n_blocks) + 256 * 2 * shape.d ** 2, 256,
                                         f"256 x {width}", "explanations_per_s", ceil),
            "workload": {"explanations": n, "mean_tokens": float(seqs.lengths.mean()), "blocks": n_blocks},
            "fast_vs_plain_bf16": {**rel_err(r_fast, r_plain),
                                   "mse_nrm_mean_abs_diff": mse_nrm_gap(r_fast, r_plain, targets, mse_scale)}}


def bench_av(model, tok, av_meta, eos, shape: Shape, ceil: dict, dev, args) -> dict:
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
                                 ("fast", FastBackend(model, tok, eos), args.fast_batches)):
        for B in sizes:
            if path == "fast":
                run(backend, vectors(B, 2))  # captures this batch size's graphs
            t, res = clock(lambda: run(backend, big[:B]), dev)
            outs[(path, B)] = res
            floor = shape.av_floor_s(B, Lp, Ts, args.new_tokens, ceil["rate"], ceil["bw"])
            floor_sus = shape.av_floor_s(B, Lp, Ts, args.new_tokens, ceil["rate_sustained"], ceil["bw"])
            new = float(np.mean([len(r[0]) for r in res]))
            sweep.append({"path": path, "batch_size": B, "seconds": t, "explanations_per_s": B / t,
                          "tokens_per_s": B * new / t, "mean_new_tokens": new, "roofline": B / floor,
                          "roofline_ratio": floor / t, "roofline_ratio_sustained_matmul": floor_sus / t})
            print(f"  av {path:5s} batch {B:5d}: {B / t:8.1f} explanations/s", flush=True)
    best = {p: max((s for s in sweep if s["path"] == p), key=lambda s: s["explanations_per_s"])
            for p in ("plain", "fast")}
    # transformers' generate called bare (no attention mask, one length): how far HFBackend's own handling costs.
    B = args.plain_batches[-1]
    bare = torch.stack(prompter.prompt_embeds(big[:B]))
    t, _ = clock(lambda: model.generate(inputs_embeds=bare, max_new_tokens=args.new_tokens, do_sample=False,
                                        pad_token_id=0), dev)
    bare_generate = {"batch_size": B, "seconds": t, "explanations_per_s": B / t}
    del bare
    pb = args.plain_batches
    agree = {f"fast_vs_plain_batch_{B}": agreement(outs[("fast", B)], outs[("plain", B)])
             for B in pb if B in args.fast_batches}
    if len(pb) > 1:
        agree[f"plain_batch_{pb[0]}_vs_plain_batch_{pb[-1]}"] = agreement(outs[("plain", pb[0])],
                                                                           outs[("plain", pb[-1])][:pb[0]])
    limit = ceil["rate"] / (2 * (shape.block_params * shape.blocks + shape.d * shape.vocab) * args.new_tokens
                    + 2 * shape.block_params * shape.blocks * Ts)
    b = best["fast"]
    return {"unit": "explanations/s", "path": "fast (nla.fast.decode.FastBackend)",
            "throughput": b["explanations_per_s"], "explanations_per_s": b["explanations_per_s"],
            "batch_size": b["batch_size"], "roofline": b["roofline"], "roofline_ratio": b["roofline_ratio"],
            "roofline_ratio_sustained_matmul": b["roofline_ratio_sustained_matmul"],
            "before": {**best["plain"], "path": "plain (HFBackend: transformers generate)",
                       "throughput": best["plain"]["explanations_per_s"]},
            "compute_bound_explanations_per_s": limit, "new_tokens": args.new_tokens, "prompt_tokens": T,
            "shared_prefix_tokens": Lp, "sweep": sweep, "greedy_agreement_bf16": agree,
            "plain_bare_generate": bare_generate, "decode_attention": "triton kernel"
            if getattr(backend, "kernel", False) else "torch cascade"}


@torch.inference_mode()
def profile(model, ar, tok, av_meta, eos, dev, args, rng, path: Path) -> dict:
    """Top kernels of a fast extraction pass, a fast AR pass and eager AV decode steps: where the time goes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    sort = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    seqs, rows, pos = documents(rng, 48, model.config.vocab_size, args.tiny)
    fast = FastPrefill(model, n_blocks=args.layer + 1, max_tokens=args.max_tokens)
    ar_in = ar_inputs(rng, 256, model.config.vocab_size, args.tiny)
    fast_ar = FastAR(ar, max_tokens=args.max_tokens)
    backend = FastBackend(model, tok, eos, graphs=False)
    prompter = AVPrompter(model.get_input_embeddings(), tok, av_meta)
    few = SamplingParams(temperature=0, max_new_tokens=4)
    jobs = {"extraction, 48 documents": lambda: fast.hidden_at(seqs, rows, pos),
            "ar, 256 explanations": lambda: fast_ar.reconstruct_ids(ar_in)}
    for B in (8,) if args.tiny else (256, 1024):
        embeds = prompter.prompt_embeds(torch.randn(B, model.config.hidden_size))

        def steps(B=B, embeds=embeds):  # the prefill sets the state; then 8 eager steps at the middle bucket
            backend.generate(embeds, few)
            sync(dev)
            return lambda: [backend._step(B, backend._bucket(backend._cap[1] // 2)) for _ in range(8)]

        jobs[f"av: 8 eager decode steps, batch {B}"] = steps()
    text = []
    for name, fn in jobs.items():
        fn()
        sync(dev)
        with torch_profile(activities=acts) as prof:
            fn()
            sync(dev)
        text.append(f"==== {name}\n" + prof.key_averages().table(sort_by=sort, row_limit=30))
    path.write_text("\n".join(text))
    return {"written": str(path)}


# ---- output -------------------------------------------------------------------------------------------------------
def table(rec: dict) -> str:
    lines = [f"GPU: {rec['gpu']}   matmul {rec['matmul_tflops']:.0f} TFLOP/s (sustained "
             f"{rec['matmul_tflops_sustained']:.0f})   copy {rec['copy_tb_s']:.2f} TB/s",
             f"{'stage':11s} {'path':6s} {'batch':>24s} {'throughput':>22s} {'roofline':>12s} {'ratio':>6s} "
             f"{'(sust.)':>7s}"]

    def row(stage, r, unit, batch=None):
        if "throughput" not in r:
            lines.append(f"{stage:11s} failed: {str(r.get('error', '?')).strip().splitlines()[-1][:100]}")
            return
        path = r["path"].split(" ")[0]
        lines.append(f"{stage:11s} {path:6s} {str(batch or r.get('batch', r.get('batch_size'))):>24s} "
                     f"{r['throughput']:>12,.1f} {unit:9s} {r['roofline']:>12,.1f} {r['roofline_ratio']:>6.2f} "
                     f"{r['roofline_ratio_sustained_matmul']:>7.2f}")

    ex, ar, av = rec["extraction"], rec["ar"], rec["av"]
    for r in (ex.get("plain_uniform_32x512"), ex.get("before"), ex):
        row("extraction", r or ex, "tokens/s")
    for r in (ar.get("plain_uniform_256x165"), ar.get("before"), ar):
        row("ar", r or ar, "expl/s")
    for s in av.get("sweep", [av]):
        row("av", {**s, "throughput": s.get("explanations_per_s")} if "sweep" in av else s, "expl/s",
            s.get("batch_size"))
    checks = rec["checks"]
    lines.append("checks: " + ", ".join(f"{k} {'pass' if v['pass'] else 'FAIL'}" for k, v in checks.items()
                                        if "pass" in v))
    for k in ("extraction_bf16_vs_fp32", "ar_bf16_vs_fp32"):
        if "plain_vs_fp32" in checks.get(k, {}):
            c = checks[k]
            lines.append(f"  {k}: mean rel err plain {c['plain_vs_fp32']['mean_rel_err']:.1e}, "
                         f"fast {c['fast_vs_fp32']['mean_rel_err']:.1e}")
    c = checks.get("av_bf16_vs_fp32", {})
    if "plain_vs_fp32" in c:
        lines.append(f"  av bf16: tokens that follow the fp32 answer, mean: plain "
                     f"{c['plain_vs_fp32']['mean_common_prefix_tokens']:.0f}, fast "
                     f"{c['fast_vs_fp32']['mean_common_prefix_tokens']:.0f} of {checks['av_fp32'].get('new_tokens')}")
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
    args.fast_batches = [4, 8] if args.tiny else [64, 128, 256, 512, 1024, 2048]
    out_path = args.out or (Path(tempfile.gettempdir()) / "gpu_stages_tiny.json" if args.tiny
                            else ROOT / "bench/results/gpu_stages.json")
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    t_start = time.perf_counter()

    ceil = ceilings(dev, dtype, args.tiny)
    print(f"matmul {ceil['rate'] / 1e12:.1f} TFLOP/s (sustained {ceil['rate_sustained'] / 1e12:.1f}), "
          f"copy {ceil['bw'] / 1e12:.3f} TB/s, {ceil['gemm_shapes']}", flush=True)
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
           "dtype": str(dtype).removeprefix("torch."), "matmul_tflops": ceil["rate"] / 1e12,
           "matmul_tflops_sustained": ceil["rate_sustained"] / 1e12, "copy_tb_s": ceil["bw"] / 1e12,
           "sm_clock_mhz_after_sustained": ceil["sm_clock_mhz_after_sustained"], "gemm_shapes": ceil["gemm_shapes"],
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

    stage("checks", lambda: run_checks(model, ar, cfg_fields, tok, av_meta, eos, dev, args, rng))
    stage("extraction", lambda: bench_extraction(model, tok, shape, ceil, dev, args, rng))
    stage("ar", lambda: bench_ar(ar, shape, ceil, dev, args, rng, float(ar_meta.mse_scale)))
    if args.profile:
        stage("profile", lambda: profile(model, ar, tok, av_meta, eos, dev, args, rng,
                                         out_path.parent / "gpu_stages_profile.txt"))
    del ar
    stage("av", lambda: bench_av(model, tok, av_meta, eos, shape, ceil, dev, args))
    rec["goals"] = {"extraction >= 0.80 of roofline": rec["extraction"].get("roofline_ratio", 0) >= 0.80,
                    "ar >= 0.80 of roofline": rec["ar"].get("roofline_ratio", 0) >= 0.80,
                    "av >= 150 explanations/s": rec["av"].get("explanations_per_s", 0) >= 150}
    out_path.write_text(json.dumps({**rec, "history": history}, indent=2) + "\n")
    print(f"wrote {out_path}")
    print(table(rec))


if __name__ == "__main__":
    main()
