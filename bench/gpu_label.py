"""End-to-end labeling on one GPU: Ray Data, the three stages on fractional GPU actors, a real Delta lake.

    python3 bench/gpu_label.py --out $OUT/gpu_label.json     # on the lent H100 (ray and deltalake carried)
    .venv/bin/python bench/gpu_label.py --tiny                # CPU smoke test (/tmp/gpu_label_tiny.json)

It builds base, AV and AR folders of the Qwen2.5-7B-Instruct shape with random bf16 weights (the AR: 21 blocks and an
identity value head; sidecars by nla.checkpoint.pair_metas), writes a corpus of ~500-token documents, times each
stage alone in this process on the same rows (the job's own stage classes and constructor arguments, fast path on),
then runs `python -m nla.jobs.label --config jobs/configs/qwen7b-1gpu.yaml` into a fresh lake and compares its
activations/s with the slowest stage alone.

Random weights never close an explanation tag, so nothing would reach the AR. The AV is therefore made to emit one
fixed token whose text is a tagged ~150-token explanation: one residual coordinate j is held at 1 (embedding column
j = 1, row j of every o_proj and down_proj = 0), the final norm keeps only j and lm_head maps j to that token alone.
The matrices keep their shapes, so every stage does the same FLOPs as a real checkpoint; decoding runs to
max_new_tokens (150), as in bench/gpu_stages.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gpu_stages import QWEN7B, TINY, build_model, build_tokenizer  # noqa: E402

from nla import prompt as P  # noqa: E402
from nla.ar import ARModel  # noqa: E402
from nla.checkpoint import pair_metas, save_ar, save_av  # noqa: E402

CONFIG = ROOT / "jobs/configs/qwen7b-1gpu.yaml"


def explanation_token(tok, words: int) -> str:
    """A tagged explanation of ~`words` tokens of toy text, added to the tokenizer as one token."""
    from tokenizers import AddedToken

    from nla.toy.corpus import generate_corpus

    ids = tok(" ".join(d.text for d in generate_corpus(20, 7)), add_special_tokens=False)["input_ids"][:words]
    text = P.EXPLANATION_OPEN + tok.decode(ids).strip() + P.EXPLANATION_CLOSE
    tok.add_tokens([AddedToken(text, normalized=False, special=False)])
    return text


@torch.no_grad()
def emit_only(model, token_id: int, j: int = 0) -> None:
    """Greedy decoding of `model` emits token_id at every step whatever the input (see the module docstring)."""
    inner = model.model
    inner.embed_tokens.weight[:, j] = 1.0
    for layer in inner.layers:
        layer.self_attn.o_proj.weight[j, :] = 0.0
        layer.mlp.down_proj.weight[j, :] = 0.0
    inner.norm.weight.zero_()
    inner.norm.weight[j] = 1.0
    model.lm_head.weight.zero_()
    model.lm_head.weight[token_id, j] = 1.0


def build_folders(work: Path, cfg_fields: dict, layer: int, dev: torch.device, dtype: torch.dtype) -> dict:
    tok = build_tokenizer()
    expl = explanation_token(tok, 150 if cfg_fields is QWEN7B else 20)
    token_id = tok.convert_tokens_to_ids(expl)
    d = cfg_fields["hidden_size"]
    av_meta, ar_meta = pair_metas(tok, d_model=d, layer=layer, injection_scale=150.0,
                                  base_checkpoint="Qwen/Qwen2.5-7B-Instruct (shape only, random weights)")
    t0 = time.perf_counter()
    model = build_model(cfg_fields, dev, dtype)
    emit_only(model, token_id)
    save_av(model, tok, av_meta, work / "av")
    base = work / "base"  # the same weights (the edits leave extraction's FLOPs unchanged): links, no second copy
    base.mkdir(parents=True, exist_ok=True)
    for f in (work / "av").iterdir():
        if f.name != "nla_meta.json" and not (base / f.name).exists():
            (base / f.name).symlink_to(f.resolve())
    del model
    ar = ARModel(build_model(cfg_fields, dev, dtype, layer + 1))
    save_ar(ar, tok, ar_meta, work / "ar")
    del ar
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return {"tokenizer_vocab": len(tok), "explanation_token": token_id, "build_save_s": time.perf_counter() - t0,
            "explanation_tokens": len(tok(expl.removeprefix(P.EXPLANATION_OPEN).removesuffix(P.EXPLANATION_CLOSE),
                                          add_special_tokens=False)["input_ids"])}


def write_corpus(out: Path, docs: int, shards: int, words: int) -> None:
    """jsonl shards of documents of ~`words` words (toy documents joined)."""
    from nla.toy.corpus import generate_corpus

    out.mkdir(parents=True, exist_ok=True)
    pool = [d.text for d in generate_corpus(400, 11)]
    rng = np.random.default_rng(0)
    files = [(out / f"part-{s:04d}.jsonl").open("w", encoding="utf-8") for s in range(shards)]
    for i in range(docs):
        parts, n = [], 0
        while n < words:
            t = pool[rng.integers(len(pool))]
            parts.append(t)
            n += len(t.split())
        files[i % shards].write(json.dumps({"id": f"doc-{i:06d}", "text": " ".join(parts)}) + "\n")
    for f in files:
        f.close()


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def stages_alone(cfg, corpus: Path, dev: torch.device, explain_rows: int, warm_rows: int) -> dict:
    """Each stage's class, built with the job's own arguments, timed alone on the job's rows (after a warm-up call)."""
    from nla.jobs.label import stage_kwargs
    from nla.labeling.plan import make_plan
    from nla.stages.explain import ExplainStage
    from nla.stages.extract import ExtractStage
    from nla.stages.read import ReadShard
    from nla.stages.score import ScoreStage

    plan = make_plan(cfg, "label")
    kw = stage_kwargs(plan, cfg)
    reader = ReadShard(text_column=cfg.text_column, id_column=cfg.id_column, batch_docs=cfg.extractor.batch_size)
    batches = [b for s in plan.todo for b in reader({"shard": np.array([s.id], object),
                                                     "path": np.array([s.path], object),
                                                     "format": np.array([s.format], object)})]
    out: dict = {}

    def concat(parts):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def timed(name, fn, calls, items_of):
        fn(calls[0])  # warm-up: compile, CUDA graphs, allocator
        sync(dev)
        t0 = time.perf_counter()
        res = [fn(c) for c in calls]
        sync(dev)
        s = time.perf_counter() - t0
        items = sum(items_of(r) for r in res)
        out[name] = {"seconds": s, "calls": len(calls), "activations": items, "activations_per_s": items / s}
        print(f"[alone] {name}: {items} activations in {s:.1f} s = {items / s:.1f}/s", flush=True)
        return res

    ex = ExtractStage(**kw["extract"])
    acts = timed("extract", ex, batches, lambda r: int((r["status"] == "ok").sum()))
    docs = sum(len(b["doc_id"]) for b in batches)
    tokens = sum(len(ex.extractor.tokenizer(str(t), truncation=True, max_length=cfg.extract.max_length)["input_ids"])
                 for b in batches for t in b["text"])
    out["extract"].update(documents=docs, tokens=tokens, tokens_per_s=tokens / out["extract"]["seconds"])
    del ex
    gc.collect()
    torch.cuda.empty_cache() if dev.type == "cuda" else None
    acts = concat(acts)
    n = min(explain_rows, len(acts["status"]))
    bs = cfg.explainer.batch_size
    calls = [{k: v[i:i + bs] for k, v in acts.items()} for i in range(0, n, bs)]
    av = ExplainStage(**kw["explain"])
    av(calls[0] if warm_rows >= bs else {k: v[:warm_rows] for k, v in calls[0].items()})
    expl = timed("explain", av, calls, lambda r: len(r["status"]))
    ok = sum(int((r["expl_status"] == "ok").sum()) for r in expl)
    out["explain"]["explanations_ok"] = ok
    del av
    gc.collect()
    torch.cuda.empty_cache() if dev.type == "cuda" else None
    sc = ScoreStage(**kw["score"])
    scored = timed("score", sc, [{k: v for k, v in r.items()} for r in expl], lambda r: len(r["mse"]))
    out["score"]["scored"] = int(sum(np.isfinite(r["mse"]).sum() for r in scored))
    del sc
    gc.collect()
    torch.cuda.empty_cache() if dev.type == "cuda" else None
    return out


def run_job(overrides: list[str], env: dict, config: Path = CONFIG) -> dict:
    """`python -m nla.jobs.label` as a user runs it; commit lines are timed as they arrive."""
    cmd = [sys.executable, "-m", "nla.jobs.label", "--config", str(config.relative_to(ROOT)), *overrides]
    print("[job]", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    commits, lines = [], []
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line.rstrip())
        m = re.match(r"\[commit\] shard \S+: (\d+) activations", line)
        if m:
            commits.append((time.perf_counter() - t0, int(m.group(1))))
    rc = proc.wait()
    wall = time.perf_counter() - t0
    summary = {}
    for line in lines:
        m = re.match(r"\s+(\w+)\s+(\S+)$", line)
        if m:
            try:
                summary[m.group(1)] = float(m.group(2))
            except ValueError:
                summary[m.group(1)] = m.group(2)
    res = {"command": " ".join(["python -m nla.jobs.label", *cmd[3:]]), "rc": rc, "wall_s": wall, "summary": summary,
           "commits": commits, "log_tail": lines[-40:]}
    k = max(1, len(commits) // 10)  # steady state: commits come in bunches at the start and end; leave 10% each side
    if len(commits) > 2 * k + 1:
        res["steady_activations_per_s"] = (sum(n for _, n in commits[k + 1:len(commits) - k])
                                           / (commits[-k - 1][0] - commits[k][0]))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny model on the CPU: a smoke test of the whole script")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--work", type=Path, help="folder for models, corpus and lake (default: a temporary one)")
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--shards", type=int, default=30)
    ap.add_argument("--explain-rows", type=int, default=2048, help="activations timed through the AV alone")
    args = ap.parse_args()
    dev = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
    cfg_fields, layer = (TINY, 2) if args.tiny else (QWEN7B, 20)
    if args.tiny:
        args.docs, args.shards, args.explain_rows = min(args.docs, 48), min(args.shards, 4), min(args.explain_rows, 64)
    out_path = args.out or (Path(tempfile.gettempdir()) / "gpu_label_tiny.json" if args.tiny
                            else ROOT / "bench/results/gpu_label.json")
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_label_"))
    torch.manual_seed(0)
    t_start = time.perf_counter()
    rec: dict = {"gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({os.cpu_count()} cores)",
                 "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "command": "python3 bench/gpu_label.py" + (" --tiny" if args.tiny else ""),
                 "torch": torch.__version__, "transformers": __import__("transformers").__version__,
                 "config": str(CONFIG.relative_to(ROOT)), "docs": args.docs, "shards": args.shards}

    def save() -> None:
        rec["seconds_total"] = time.perf_counter() - t_start
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(rec, indent=2) + "\n")

    rec["models"] = build_folders(work, cfg_fields, layer, dev, dtype)
    print(f"models saved ({rec['models']['build_save_s']:.0f} s)", flush=True)
    write_corpus(work / "corpus", args.docs, args.shards, words=60 if args.tiny else 420)
    overrides = [f"input={work / 'corpus'}", f"models.base={work / 'base'}", f"models.av={work / 'av'}",
                 f"models.ar={work / 'ar'}", "sampling.max_new_tokens=" + ("12" if args.tiny else "150")]
    if args.tiny:  # the same layout on 2 CPU cores: no GPUs, fp32, small batches
        overrides += ["models.device=cpu", "models.dtype=float32", "extract.min_position=5", "read.num_cpus=0.1",
                      "extractor.batch_size=8", "explainer.batch_size=16", "scorer.batch_size=16"]
        overrides += [f"{s}.{k}" for s in ("extractor", "explainer", "scorer")
                      for k in ("num_gpus=0", "num_cpus=0.5", "threads=1")]
    from nla.config import load_config
    from nla.labeling.config import LabelConfig

    cfg = load_config(LabelConfig, str(CONFIG), [*overrides, f"lake={work / 'lake-alone'}"])
    rec["layout"] = {s: asdict(getattr(cfg, s)) for s in ("read", "extractor", "explainer", "scorer")}
    rec["alone"] = stages_alone(cfg, work / "corpus", dev, args.explain_rows, warm_rows=cfg.explainer.batch_size)
    slowest = min(rec["alone"], key=lambda k: rec["alone"][k]["activations_per_s"])
    rec["slowest_stage"] = slowest
    shares = {k: 1.0 / v["activations_per_s"] for k, v in rec["alone"].items()}
    rec["one_card_bound_activations_per_s"] = 1.0 / sum(shares.values())  # the stages time-share one GPU
    save()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    rec["job"] = run_job([*overrides, f"lake={work / 'lake'}"], env)
    e2e = rec["job"]["summary"].get("activations_per_s", 0.0)
    steady = rec["job"].get("steady_activations_per_s", 0.0)
    av_in_job = rec["job"]["summary"].get("explain_activations_per_s", 0.0)  # the AV's model time inside the job
    alone = rec["alone"][slowest]["activations_per_s"]
    rec["result"] = {"end_to_end_activations_per_s": e2e, "steady_activations_per_s": steady,
                     "slowest_stage_alone_activations_per_s": alone, "av_in_job_activations_per_s": av_in_job,
                     "job_seconds": rec["job"]["summary"].get("seconds", 0.0),
                     "first_commit_s": rec["job"]["commits"][0][0] if rec["job"]["commits"] else None,
                     "ratio_end_to_end": e2e / alone, "ratio_steady": steady / alone,
                     "one_card_bound_activations_per_s": rec["one_card_bound_activations_per_s"],
                     "ratio_steady_vs_one_card_bound": steady / rec["one_card_bound_activations_per_s"],
                     "goal_0.85_of_slowest_alone": e2e / alone >= 0.85}
    try:
        from deltalake import DeltaTable

        rec["lake"] = {t: DeltaTable(str(work / "lake" / t)).to_pyarrow_table().num_rows
                       for t in ("activations", "explanations") if (work / "lake" / t).is_dir()}
    except Exception as e:  # noqa: BLE001 - the lake check is a report, not a gate
        rec["lake"] = {"error": repr(e)}
    save()
    print(json.dumps(rec["result"], indent=2))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
