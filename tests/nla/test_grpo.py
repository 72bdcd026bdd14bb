"""GRPO (nla/train/grpo.py) on the toy kit, in-process, without Ray: group advantages and k3, the reward of a sample
cut at the length cap (-2, even with its tags closed), reward = -mse_nrm from the live AR, the sampled stop token in
the loss, one DDP all-reduce per step whatever the micro-batching, and one whole step (both models move)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nla.train.grpo import FAILED_REWARD, GRPOConfig, GRPOMismatch, GRPOTrainer, group_advantages, k3


@pytest.fixture(scope="module")
def models(toy_kit):
    """A fresh (policy, reference, AR, tokenizer, AV meta, AR meta, eos ids) loader: each test trains its own copy."""
    from nla.client import eos_ids
    from nla.train.run import load_ar, load_av

    policy, tok, av_meta = load_av(str(toy_kit / "av"), torch.float32, "cpu")
    reference, _, _ = load_av(str(toy_kit / "av"), torch.float32, "cpu")
    ar, _, ar_meta = load_ar(str(toy_kit / "ar"), torch.float32, "cpu")
    state = {k: {n: v.clone() for n, v in m.state_dict().items()} for k, m in (("av", policy), ("ar", ar))}

    def fresh(**cfg) -> GRPOTrainer:
        policy.load_state_dict(state["av"])
        ar.load_state_dict(state["ar"])
        return GRPOTrainer(policy, reference, ar, tok, av_meta, ar_meta, GRPOConfig(**cfg),
                           eos_ids(toy_kit / "av", tok))

    return fresh


def vectors(n: int, d: int = 128) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0)) * 3


def live_ar_mse(t: GRPOTrainer, texts: list[str], v: torch.Tensor) -> torch.Tensor:
    """mse = 2(1 - cos) of the trainer's AR as it is now, computed here from its forward."""
    with torch.no_grad():
        t.ar_module.eval()
        enc = t.ar_module.encode(t.tokenizer, t.ar_meta.ar_template, texts)
        recon = t.ar_module(enc["input_ids"], enc["attention_mask"])
    return 2 * (1 - torch.nn.functional.cosine_similarity(recon, v, dim=-1))


def test_group_advantages_and_k3():
    r = torch.tensor([1.0, 2.0, 3.0, 4.0, -2.0, -2.0, -2.0, -2.0])
    a = group_advantages(r, 4)
    expected = (torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5) / (torch.tensor([1.0, 2.0, 3.0, 4.0]).std(unbiased=False)
                                                             + 1e-4)
    assert torch.allclose(a[:4], expected) and torch.equal(a[4:], torch.zeros(4))  # an all-failed group: no signal
    lp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -2.0])
    assert torch.allclose(k3(lp, ref), torch.tensor([float(np.exp(-0.5)) + 0.5 - 1, 0.0]))


def test_a_sample_cut_at_the_cap_gets_the_failed_reward_even_with_its_tags_closed(models):
    """Greedy, the toy AV's explanation of this vector is L tokens and then the stop token. With the cap at L the
    sample ends exactly after </explanation> (it parses ok) but was cut: reward -2. With the cap at L + 1 the
    policy samples its stop token: the sample is ok and scored."""
    from nla.av import decode_generations

    t = models(batch_size=1, group=2, temperature=0, max_new_tokens=60)
    v = vectors(1)
    free, gens = t.sample(v, seed=0)
    length = len(free[0]) - 1
    assert free[0][-1] in t.eos_ids and gens[0].status == "ok" and gens[0].n_tokens == length
    t.cfg.max_new_tokens = length
    capped, capped_gens = t.sample(v, seed=0)
    assert capped == [free[0][:-1]] * 2  # the same tokens, without the stop
    assert [g.status for g in capped_gens] == ["ok", "ok"] and capped_gens[0].raw_output.endswith("</explanation>")
    rewards, ok, _ = t.rewards(capped_gens, capped, v.repeat(2, 1))
    assert ok == [] and rewards.tolist() == [FAILED_REWARD] * 2
    rewards, ok, _ = t.rewards(gens, free, v.repeat(2, 1))
    assert ok == [0, 1] and rewards.tolist() == pytest.approx([-live_ar_mse(t, [gens[0].explanation], v).item()] * 2,
                                                              abs=1e-6)
    no_tags = decode_generations(t.tokenizer, [(free[0][:5], False)])  # stopped early, without its tags
    assert no_tags[0].status == "no_tags" and t.rewards(no_tags, [free[0][:5] + [free[0][-1]]], v)[0].tolist() == \
        [FAILED_REWARD]


def test_reward_is_minus_mse_of_the_live_ar_and_the_stop_token_is_scored(models):
    """Rewards are -mse_nrm of the AR as it is at that step: after a step has trained the AR, the same samples
    score by the new AR. Each finished response ends with the stop token the policy sampled, and the loss mask
    covers it."""
    from nla.train.grpo import response_batch

    t = models(batch_size=2, group=2, temperature=0, max_new_tokens=60, ar_lr=1e-3)
    v = vectors(2)
    reps = v.repeat_interleave(2, 0)
    responses, gens = t.sample(v, seed=0)
    texts = [g.explanation for g in gens]
    before = live_ar_mse(t, texts, reps)
    rewards, ok, mse = t.rewards(gens, responses, reps)
    assert ok == [0, 1, 2, 3] and torch.allclose(rewards, -before, atol=1e-6) and torch.equal(rewards, -mse)
    row = t.step(v)  # trains the AR on these samples (greedy: the same ones)
    assert row["reward_mean"] == pytest.approx(-float(before.mean()), abs=1e-6)
    after = live_ar_mse(t, texts, reps)
    assert float((after - before).abs().min()) > 1e-4  # the AR moved
    assert torch.allclose(t.rewards(gens, responses, reps)[0], -after, atol=1e-6)
    ids, mask, resp = response_batch(t.prompter.canonical_ids, responses, t.backend.pad_id)
    start = len(t.prompter.canonical_ids)
    for b, r in enumerate(responses):
        assert r[-1] in t.eos_ids and len(r) == gens[b].n_tokens + 1
        assert int(resp[b].sum()) == len(r) and bool(resp[b, start + len(r) - 1]) and ids[b, start + len(r) - 1] == \
            r[-1]


def test_one_ddp_all_reduce_per_step_whatever_the_micro_batches(models, tmp_path):
    """The policy under DDP (one gloo rank, in-process), a step in 1 and in 4 micro-batches: the AV's gradients are
    all-reduced only during the step's last backward (DDP's no_sync on every micro-batch before it)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        t = models(batch_size=2, group=2, temperature=1.0, max_new_tokens=24)
        forwards, synced = [0], []

        def count(state, bucket):  # DDP's communication hook: called for each gradient bucket it all-reduces
            synced.append(forwards[0])  # ... during the backward of the latest forward
            fut = torch.futures.Future()
            fut.set_result(bucket.buffer())
            return fut

        policy = DDP(t.policy)
        policy.register_comm_hook(None, count)
        policy.register_forward_pre_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
        t = GRPOTrainer(policy, t.reference, t.ar, t.tokenizer, t.av_meta, t.ar_meta, t.cfg, t.eos_ids)
        for micro_batch, n in ((0, 1), (1, 4)):  # 4 samples: at once, then one at a time
            t.cfg.micro_batch = micro_batch
            forwards[0], synced[:] = 0, []
            t.step(vectors(2))
            assert forwards[0] == n and synced and set(synced) == {n}, (micro_batch, forwards[0], synced)
    finally:
        dist.destroy_process_group()


def test_grpo_step_on_toy_kit(models):
    """One GRPO step at temperature 1: the reported figures agree with each other, the AV and the AR both move, and
    the step-0 check stops a run whose reward and training paths disagree."""
    from nla.metrics import fve_nrm

    t = models(batch_size=4, group=4, max_new_tokens=48, av_lr=1e-4, ar_lr=1e-4)
    head0 = t.ar_module.value_head.weight.detach().clone()
    emb0 = t.av_module.get_input_embeddings().weight.detach().clone()
    v = vectors(4)
    responses, gens = t.sample(v, seed=0)  # what step() samples first (same seed, same weights)
    rewards, ok, mse = t.rewards(gens, responses, v.repeat_interleave(4, 0))
    row = t.step(v)
    assert row["failed_fraction"] == 1 - len(ok) / 16 and row["reward_mean"] == pytest.approx(float(rewards.mean()))
    assert row["reward_std"] == pytest.approx(float(rewards.std())) and row["kl"] == 0.0  # policy == reference
    assert row["fve_nrm"] == pytest.approx(fve_nrm(mse, v.repeat_interleave(4, 0)[ok], t.ar_meta.mse_scale))
    assert row["response_tokens"] == np.mean([g.n_tokens for g in gens])
    assert 0 < row["sample_seconds"] < row["seconds"]  # the rollout is timed apart (bench/gpu_train.py's rate)
    assert not torch.equal(t.ar_module.value_head.weight, head0)
    assert not torch.equal(t.av_module.get_input_embeddings().weight, emb0)
    with pytest.raises(GRPOMismatch, match=r"step 0: the reward path's mse 0\.5000 and the training path's 0\.7000 "
                                           r"differ by more than 10%\. Fix"):
        t.check_step0(torch.tensor([0.5]), torch.tensor([0.7]))
