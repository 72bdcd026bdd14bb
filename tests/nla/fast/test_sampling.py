"""The fast path's sampler (nla.fast.sampling): the right distribution, the top-k/top-p cuts, streams per row."""

from __future__ import annotations

import torch

from nla.fast.sampling import key_tensor, sample_key, sample_tokens, uniforms


def test_draws_follow_softmax_of_logits_over_temperature():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5]]).repeat(6000, 1)  # (N, V): one distribution, many rows
    words = key_tensor(3, [sample_key("x", i) for i in range(6000)])
    for temperature in (1.0, 0.5):
        tokens = sample_tokens(logits, words, torch.tensor([4]), torch.tensor([1 / temperature]))
        freq = torch.bincount(tokens, minlength=5).float() / len(tokens)
        torch.testing.assert_close(freq, torch.softmax(logits[0] / temperature, -1), atol=0.02, rtol=0)


def test_top_k_and_top_p_keep_only_the_head():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    words = key_tensor(0, range(2000))
    step, one = torch.tensor([0]), torch.tensor([1.0])
    assert set(sample_tokens(logits, words, step, one, top_k=2).tolist()) == {0, 1}
    assert set(sample_tokens(logits, words, step, one, top_p=0.7).tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.7
    assert set(sample_tokens(logits, words, step, one, top_p=0.5).tolist()) == {0}
    assert set(sample_tokens(logits, words, step, one).tolist()) == {0, 1, 2, 3}


def test_a_rows_stream_depends_on_seed_key_and_index_only():
    words = key_tensor(11, ["a", "b", "c"])
    u = uniforms(words, torch.tensor([5]), 1000)  # (3, V)
    torch.testing.assert_close(uniforms(words[2:], torch.tensor([5]), 1000), u[2:], rtol=0, atol=0)
    assert (u > 0).all() and (u < 1).all() and abs(float(u.mean()) - 0.5) < 0.02
    assert not torch.equal(uniforms(words, torch.tensor([6]), 1000), u)  # another token index, other numbers
    assert not torch.equal(uniforms(key_tensor(12, ["a", "b", "c"]), torch.tensor([5]), 1000), u)
    assert key_tensor(11, ["a"]).tolist() == [[*key_tensor(11, ["a", "z"])[0].tolist()]]
