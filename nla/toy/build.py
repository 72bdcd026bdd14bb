"""`nla toy build`: a real NLA pair built on the CPU in minutes, in the release's layout, with measured quality.

corpus (toy/corpus.py) -> BPE tokenizer -> tiny Llama-config base trained on the corpus -> activations at layer K
-> teacher explanations of each prefix -> AV/AR inits made exactly as `nla init` makes them -> SFT of both ->
held-out figures (AR fve, round-trip fve, shuffled control) in report.json. The kit is cached under
$NLA_HOME/toy/<recipe hash> and rebuilt only when the recipe or the code that builds it changes.
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nla import hf
from nla import prompt as P
from nla.ar import ARModel
from nla.checkpoint import pair_metas, save_ar, save_av
from nla.extract import Extractor
from nla.extract_config import ExtractConfig
from nla.toy.corpus import generate_corpus, teacher_explanation, vocabulary_texts
from nla.toy.kit import ToyRecipe
from nla.toy.tokenizer import train_tokenizer, vocab_size_of
from nla.train.loop import TrainConfig, index_batches, train
from nla.train.sft import train_ar, train_av, trained_meta

TOY_AV_TEMPLATE = "Here is the vector:\n\n<concept>{injection_char}</concept>\n\nPlease provide an explanation."


def _base_model(tokenizer: Any, r: ToyRecipe) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab_size_of(tokenizer), hidden_size=r.hidden, intermediate_size=3 * r.hidden,
                      num_hidden_layers=r.blocks, num_attention_heads=r.heads, num_key_value_heads=r.heads,
                      max_position_embeddings=256, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(r.seed)
    return LlamaForCausalLM(cfg)


def _train_base(model: Any, tokenizer: Any, texts: list[str], r: ToyRecipe, log: Any) -> float:
    enc = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in texts]

    def lm_loss(idx: np.ndarray) -> torch.Tensor:
        seqs = [enc[i] for i in idx]
        T = max(map(len, seqs))
        ids = torch.full((len(seqs), T), tokenizer.pad_token_id)
        for b, s in enumerate(seqs):
            ids[b, :len(s)] = torch.tensor(s)
        labels = ids.masked_fill(ids == tokenizer.pad_token_id, -100)
        return model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss

    cfg = TrainConfig(steps=r.base_steps, batch_size=r.base_batch, lr=r.base_lr, warmup_steps=30, seed=r.seed,
                      log_every=100)
    model.train()
    result = train(list(model.parameters()), lm_loss, index_batches(len(enc), cfg.batch_size, r.seed), cfg, log=log,
                   name="base-lm")
    model.eval()
    return result.last_loss


def build(out: Path, recipe: ToyRecipe | None = None, *, log: Any = print) -> Path:
    """Build the kit into `out` (written to a temporary sibling, then renamed: a crash leaves no half kit)."""
    from nla.client import NLAClient, NLACritic
    from nla.metrics import fve_nrm

    r = recipe or ToyRecipe()
    t0 = time.perf_counter()
    torch.manual_seed(r.seed)
    tmp = out.with_name(out.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    docs = generate_corpus(r.n_docs, r.seed)
    n_eval = int(len(docs) * r.eval_fraction)
    sample_expl = [teacher_explanation(d, d.text) for d in docs[:200]]
    templates = [TOY_AV_TEMPLATE.format(injection_char=""), P.DEFAULT_AR_TEMPLATE.format(explanation=""),
                 "user assistant"] * 200
    tokenizer = train_tokenizer([d.text for d in docs] + vocabulary_texts() + sample_expl * 5 + templates)

    base = _base_model(tokenizer, r)
    base_loss = _train_base(base, tokenizer, [d.text for d in docs[n_eval:]], r, log)
    base.save_pretrained(str(tmp / "base"))  # a plain HF model folder: `nla init` works on it too
    tokenizer.save_pretrained(str(tmp / "base"))
    log(f"[toy] base trained: loss {base_loss:.3f} ({time.perf_counter() - t0:.0f}s)")

    ext = Extractor(base, tokenizer, ExtractConfig(layer=r.layer, positions_per_doc=r.positions_per_doc,
                                                   min_position=r.min_position, seed=r.seed, context_chars=10_000,
                                                   batch_size=64))
    rows = ext([d.text for d in docs], [d.doc_id for d in docs])
    by_id = {d.doc_id: d for d in docs}
    expl = [teacher_explanation(by_id[i], c) for i, c in zip(rows["doc_id"], rows["context"])]
    vectors = torch.from_numpy(rows["vector"])
    held = np.isin(rows["doc_id"], [d.doc_id for d in docs[:n_eval]])
    tr, ev = np.flatnonzero(~held), np.flatnonzero(held)
    train_set = (vectors[tr], [expl[i] for i in tr])
    eval_set = (vectors[ev], [expl[i] for i in ev])
    scale = float(vectors[tr].norm(dim=1).mean())
    log(f"[toy] {len(rows['position'])} activations ({len(tr)} train / {len(ev)} held-out), "
        f"injection_scale {scale:.2f} ({time.perf_counter() - t0:.0f}s)")

    av_meta, ar_meta = pair_metas(tokenizer, d_model=r.hidden, layer=r.layer, injection_scale=scale,
                                  base_checkpoint="toy/base", av_template=TOY_AV_TEMPLATE)
    sft = dict(batch_size=r.sft_batch, lr=r.sft_lr, warmup_steps=20, seed=r.seed, log_every=100)

    # Both inits load before either trains (from_pretrained is not safe to run in two threads at once). With one
    # thread per op (dev.py's test run, beside other work), the two trainings run side by side, a core each: the ops
    # release the GIL, and nothing in them draws from torch's shared RNG. With more threads, one after the other.
    ar = ARModel.from_base(tmp / "base", r.layer)  # blocks 0..K, identity norm, identity head: as `nla init`
    av = hf.load_causal_lm(tmp / "base")  # AV init = the full base
    ar_cfg, av_cfg = TrainConfig(steps=r.ar_steps, **sft), TrainConfig(steps=r.av_steps, **sft)
    trainings = (lambda: train_ar(ar, tokenizer, ar_meta, train_set, eval_set, ar_cfg, log=log),
                 lambda: train_av(av, tokenizer, av_meta, train_set, eval_set, av_cfg, log=log))
    if torch.get_num_threads() == 1:
        with ThreadPoolExecutor(2) as pool:
            ar_res, av_res = [f.result() for f in [pool.submit(t) for t in trainings]]
    else:
        ar_res, av_res = [t() for t in trainings]
    save_ar(ar, tokenizer, trained_meta(ar_meta, ar_cfg, parent="toy/base", trained_on="toy corpus, teacher "
                                        "explanations", loss_type="mse_nrm"), tmp / "ar")
    save_av(av, tokenizer, trained_meta(av_meta, av_cfg, parent="toy/base", trained_on="toy corpus, teacher "
                                        "explanations", loss_type="response_ce"), tmp / "av")
    log(f"[toy] AR and AV trained ({time.perf_counter() - t0:.0f}s)")

    # Quality, measured through the public API on the saved folders (proves they load unchanged).
    client, critic = NLAClient(tmp / "av", batch_size=128), NLACritic(tmp / "ar", batch_size=128)
    pick = ev[np.random.default_rng(r.seed).permutation(len(ev))[:r.roundtrip_eval]]
    v = vectors[pick]
    gens = client.explain(v, temperature=0, max_new_tokens=64)
    said = [g.explanation or g.raw_output or "(empty)" for g in gens]
    mse_rt, _ = critic.score_batch(said, v)
    shuffled = [said[i] for i in np.roll(np.arange(len(said)), 1)]
    mse_sh, _ = critic.score_batch(shuffled, v)
    mse_teacher, _ = critic.score_batch([expl[i] for i in pick], v)
    report = {
        "ar_fve": ar_res.evals[-1]["eval_fve"],
        "roundtrip_fve": fve_nrm(mse_rt, v, critic.mse_scale),
        "shuffled_fve": fve_nrm(mse_sh, v, critic.mse_scale),
        "teacher_fve_on_roundtrip_set": fve_nrm(mse_teacher, v, critic.mse_scale),
        "roundtrip_mse": float(mse_rt.mean()),
        "ok_fraction": float(np.mean([g.status == "ok" for g in gens])),
        "build_seconds": time.perf_counter() - t0,
        "base_lm_loss": base_loss,
        "ar_sft": {"first_loss": ar_res.first_loss, "last_loss": ar_res.last_loss, **ar_res.evals[-1]},
        "av_sft": {"first_loss": av_res.first_loss, "last_loss": av_res.last_loss, **av_res.evals[-1]},
        "n_train": len(tr), "n_eval": len(ev), "injection_scale": scale, "recipe": asdict(r),
        "examples": [{"context": rows["context"][i][-80:], "teacher": expl[i], "av": s}
                     for i, s in zip(pick[:5].tolist(), said[:5])],
    }
    (tmp / "report.json").write_text(json.dumps(report, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log(f"[toy] built {out} in {report['build_seconds']:.0f}s: ar_fve {report['ar_fve']:.3f} roundtrip_fve "
        f"{report['roundtrip_fve']:.3f} shuffled_fve {report['shuffled_fve']:.3f}")
    return out

