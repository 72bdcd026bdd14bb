"""The SFT loops: schedule, accumulation, bf16, a real decrease of both losses on a tiny pair; injection inside the
forward (the path FSDP needs) equals the inputs_embeds path; FSDP2 over two gloo ranks equals one process and DDP."""

from __future__ import annotations

import copy
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from nla import hf
from nla.ar import ARModel
from nla.meta import NLAMeta
from nla.train.loop import TrainConfig, lr_at
from nla.train.sft import AVSFTData, train_ar, train_av, trained_meta
from nla.av import AVPrompter, HFBackend, SamplingParams
from nla.checkpoint import pair_metas
from tests.conftest import SHORT_AV


def _data(d: int, n: int = 48):
    g = torch.Generator().manual_seed(0)
    topics = ["weather", "music", "finance", "health"]
    centers = torch.randn(4, d, generator=g) * 3
    labels = torch.arange(n) % 4
    vectors = centers[labels] + 0.3 * torch.randn(n, d, generator=g)
    texts = [f"The text is about {topics[i]}." for i in labels.tolist()]
    return vectors, texts


def test_schedule_warms_up_then_decays():
    cfg = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(99, cfg) == pytest.approx(1e-4, rel=0.05)
    assert lr_at(50, cfg) < lr_at(20, cfg)


def test_first_and_last_loss_never_share_a_step():
    from nla.train.loop import TrainResult

    assert (TrainResult(losses=[4.0, 3.0, 2.0, 1.0]).first_loss, TrainResult(losses=[4.0, 3.0, 2.0, 1.0]).last_loss) \
        == (3.5, 1.5)  # a 4-step run: steps 1-2 against 3-4 (was the mean of all four, twice)
    long = TrainResult(losses=[float(i) for i in range(30)])
    assert (long.first_loss, long.last_loss) == (4.5, 24.5)  # 10 steps at each end
    one = TrainResult(losses=[2.0])
    assert one.first_loss == one.last_loss == 2.0


@pytest.mark.parametrize("dtype, accum", [("float32", 1), ("bfloat16", 2)])
def test_ar_sft_learns(pair, dtype, accum):
    meta = NLAMeta.load(pair[1])
    ar = ARModel.from_pretrained(pair[1])
    tok = hf.load_tokenizer(pair[1])
    vectors, texts = _data(meta.d_model)
    cfg = TrainConfig(steps=40, batch_size=16, grad_accum=accum, lr=3e-3, warmup_steps=5, dtype=dtype, log_every=0)
    res = train_ar(ar, tok, meta, (vectors, texts), (vectors[:16], texts[:16]), cfg, log=None)
    assert res.last_loss < res.first_loss * 0.7
    assert res.evals[-1]["eval_fve"] > 0.3
    new = trained_meta(meta, cfg, parent=str(pair[1]), trained_on="unit", loss_type="mse_nrm")
    assert new.stage == "sl" and new.raw["training"]["global_batch_size"] == 16 * accum


def test_av_sft_learns_response_only(pair):
    meta = NLAMeta.load(pair[0])
    model = hf.load_causal_lm(pair[0])
    tok = hf.load_tokenizer(pair[0])
    vectors, texts = _data(meta.d_model)
    data = AVSFTData(AVPrompter(model.get_input_embeddings(), tok, meta), vectors, texts)
    ids, mask, labels, _ = data.batch([0, 1])
    p = len(data.prompt)
    assert (labels[:, :p] == -100).all() and (labels[0, p:mask[0].sum()] == ids[0, p:mask[0].sum()]).all()
    assert tok.decode(ids[0, p:mask[0].sum()]).startswith("<explanation>\n")
    cfg = TrainConfig(steps=80, batch_size=16, lr=3e-3, warmup_steps=5, log_every=0)  # first 10 steps 5.9, last 10 1.7
    res = train_av(model, tok, meta, (vectors, texts), (vectors[:16], texts[:16]), cfg, log=None)
    assert res.last_loss < res.first_loss * 0.5


@pytest.mark.parametrize("family", ["llama", "gemma3"])  # gemma3: the embedding scales tokens, never the vector
def test_injecting_in_forward_equals_inputs_embeds(family, make_base, tokenizer):
    model = hf.load_causal_lm(make_base(family))
    meta, _ = pair_metas(tokenizer, d_model=model.config.hidden_size, layer=1, injection_scale=7.0,
                         base_checkpoint="unit", av_template=SHORT_AV)
    prompter = AVPrompter(model.get_input_embeddings(), tokenizer, meta)
    data = AVSFTData(prompter, *_data(meta.d_model, n=4))
    ids, mask, _, vectors = data.batch([0, 1, 2, 3])
    with torch.no_grad():
        expected = model(inputs_embeds=prompter.embed(ids, vectors), attention_mask=mask).logits
        with prompter.injecting(vectors):
            got = model(input_ids=ids, attention_mask=mask).logits
        plain = model(input_ids=ids, attention_mask=mask).logits  # the hook is gone on exit
    assert torch.equal(got, expected) and not torch.equal(plain, expected)


def _fsdp_worker(rank: int, world: int, port: int, av_dir: str, ar_dir: str, tmp: str) -> None:
    """One of two gloo ranks: sharded AV/AR against unsharded copies fed the same batch on both ranks, then
    run_sft resumed from its own step-2 checkpoint, then run_sft of the AV and the AR under FSDP against DDP."""
    import os
    from pathlib import Path

    import torch.distributed as dist

    from nla.train.config import TrainJobConfig
    from nla.train.data import Examples
    from nla.train.run import WorkerEnv, run_sft
    from nla.train.sft import ar_eval, ar_loss, av_loss
    from nla.train.sharding import gathered, model_state, optimizer_state, shard, whole

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    meta, tok = NLAMeta.load(av_dir), hf.load_tokenizer(av_dir)
    vectors, texts = _data(meta.d_model, n=8)

    def step(model, loss):  # one clipped AdamW step; returns the optimiser
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        loss(model).backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 0.5)
        opt.step()
        return opt

    def same(a: dict, b: dict) -> bool:
        return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)

    av, ref = shard(hf.load_causal_lm(av_dir), "cpu"), hf.load_causal_lm(av_dir)
    prompter = AVPrompter(av.get_input_embeddings(), tok, meta)
    batch = AVSFTData(prompter, vectors, texts).batch(list(range(8)))
    opt = step(av, lambda m: av_loss(m, prompter, batch))
    step(ref, lambda m: av_loss(m, AVPrompter(m.get_input_embeddings(), tok, meta), batch))
    state, opt_state = model_state(av), optimizer_state(av, opt)  # collective: whole on rank 0, {} elsewhere
    assert (same(state, ref.state_dict()) and len(opt_state["state"]) > 0) if rank == 0 else state == opt_state == {}
    with gathered(av):  # synced greedy generate: the ranks stop at different steps
        embeds = prompter.prompt_embeds(vectors[rank:rank + 2])
    got = HFBackend(av, tok, {tok.eos_token_id}, sharded=True).generate(
        embeds, SamplingParams(max_new_tokens=3 + 4 * rank, temperature=0))
    want = HFBackend(ref, tok, {tok.eos_token_id}).generate(
        AVPrompter(ref.get_input_embeddings(), tok, meta).prompt_embeds(vectors[rank:rank + 2]),
        SamplingParams(max_new_tokens=3 + 4 * rank, temperature=0))
    assert got == want, (got, want)
    final = whole(av, lambda: hf.load_causal_lm(av_dir))
    assert (final is None) == (rank != 0) and (final is None or same(final.state_dict(), ref.state_dict()))

    ar, ar_ref = shard(ARModel.from_pretrained(ar_dir).train(), "cpu"), ARModel.from_pretrained(ar_dir).train()
    for m in (ar, ar_ref):
        step(m, lambda m: ar_loss(m, tok, NLAMeta.load(ar_dir), texts, vectors))
    ar_state = model_state(ar)
    assert same(ar_state, ar_ref.state_dict()) if rank == 0 else ar_state == {}

    # run_sft under FSDP, 4 steps, then again resumed from its step-2 checkpoint (model and AdamW state): same end
    cfg = TrainJobConfig(role="av", init=av_dir, data="unit")
    cfg.sft = TrainConfig(steps=4, batch_size=2, lr=1e-2, warmup_steps=1, log_every=0)
    cfg.scaling.checkpoint_every = 2
    ex = Examples([str(i) for i in range(8)], vectors, texts)
    reported: dict = {}

    def env(resume: dict | None = None) -> WorkerEnv:
        return WorkerEnv(rank=rank, world=world, wrap=lambda m: shard(m, "cpu"), resume=resume, log=lambda m: None,
                         report=lambda row, st: reported.setdefault(row["step"], copy.deepcopy(st)))  # as saved

    full = run_sft(cfg, env(), Path(tmp) / "full", data=(ex, ex.subset(range(4))))
    state_file = Path(tmp) / "state.pt"
    if rank == 0:
        torch.save(reported[2], state_file)
    dist.barrier()
    resumed = run_sft(cfg, env(torch.load(state_file, weights_only=False)), Path(tmp) / "resumed",
                      data=(ex, ex.subset(range(4))))
    assert resumed["resumed_from"] == 2 and resumed["eval_loss"] == pytest.approx(full["eval_loss"], rel=1e-5), \
        (full, resumed)
    init = hf.load_causal_lm(av_dir)
    p0 = AVPrompter(init.get_input_embeddings(), tok, meta)
    held = AVSFTData(p0, vectors[:4], texts[:4])
    with torch.no_grad():
        before = float(np.mean([float(av_loss(init, p0, held.batch(idx))) for idx in ([0, 1], [2, 3])]))
    assert abs(full["eval_loss"] - before) > 1e-2 * before  # the 4 steps moved it: the comparison means something

    # the same runs under DDP (torch's DistributedDataParallel, what ray.train.torch.prepare_model wraps a model in):
    # each rank trains on its own half of the examples and the gradients are averaged, sharded or not, so FSDP's
    # eval loss equals DDP's, for the AV and for the AR (it differs from a rank training alone: see the test)
    from torch.nn.parallel import DistributedDataParallel

    def ddp_env() -> WorkerEnv:
        return WorkerEnv(rank=rank, world=world, wrap=lambda m: DistributedDataParallel(m), log=lambda m: None)

    ddp = run_sft(cfg, ddp_env(), Path(tmp) / "ddp", data=(ex, ex.subset(range(4))))
    assert ddp["eval_loss"] == pytest.approx(full["eval_loss"], rel=1e-4), (full, ddp)
    assert ddp["last_loss"] == pytest.approx(full["last_loss"], rel=1e-4), (full, ddp)
    ar_cfg = TrainJobConfig(role="ar", init=ar_dir, data="unit")
    ar_cfg.sft = TrainConfig(steps=4, batch_size=2, lr=1e-2, warmup_steps=1, log_every=0)
    ar_fsdp = run_sft(ar_cfg, env(), Path(tmp) / "ar-fsdp", data=(ex, ex.subset(range(4))))
    ar_ddp = run_sft(ar_cfg, ddp_env(), Path(tmp) / "ar-ddp", data=(ex, ex.subset(range(4))))
    assert ar_ddp["eval_mse"] == pytest.approx(ar_fsdp["eval_mse"], rel=1e-4), (ar_fsdp, ar_ddp)
    with torch.no_grad():
        ar_before = ar_eval(ARModel.from_pretrained(ar_dir), tok, NLAMeta.load(ar_dir), texts[:4], vectors[:4])
    assert abs(ar_fsdp["eval_mse"] - ar_before["eval_mse"]) > 1e-2 * ar_before["eval_mse"]  # the steps moved it
    dist.destroy_process_group()


def test_fsdp_two_ranks_equal_one_process_and_state_round_trips(pair, tmp_path):
    """FSDP2 on gloo: a step equals the unsharded one (same batch on both ranks) for the AV and the AR, the gathered
    state is the module's state_dict on rank 0, synced generate matches, run_sft resumes exactly, and run_sft under
    FSDP ends at DDP's eval loss (1e-4 relative) for the AV and the AR. (The same FSDP code through Ray Train:
    tests/jobs/test_train.py.)"""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_fsdp_worker, args=(2, port, str(pair[0]), str(pair[1]), str(tmp_path)), nprocs=2)
