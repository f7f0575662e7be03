"""Length-sorted, trimmed micro-batches and the fused old-log-prob pass change no result."""

import math

import pytest
import torch

from rlx.rollout.batch import RolloutBatch, length_sorted_micro_batches
from rlx.train import train


def padded_batch(lengths: list[int], prompt_length: int = 3, width: int = 6) -> RolloutBatch:
    """Rows whose completions have the given lengths (EOS included), right-padded to `width`."""
    n = len(lengths)
    response = torch.zeros(n, width)
    for row, length in enumerate(lengths):
        response[row, :length] = 1
    attention = torch.cat([torch.ones(n, prompt_length), response], dim=1).long()
    ids = torch.arange(n * (prompt_length + width)).reshape(n, -1) * attention
    return RolloutBatch(input_ids=ids, attention_mask=attention, response_mask=response, prompt_length=prompt_length,
                        completions=[str(i) for i in range(n)], prompt_index=torch.arange(n),
                        truncated=torch.zeros(n, dtype=torch.bool))


def test_response_lengths_and_trimmed_select():
    batch = padded_batch([2, 6, 1, 4])
    assert batch.response_lengths().tolist() == [2, 6, 1, 4]
    part = batch.select(torch.tensor([0, 3]), width=4)
    assert part.input_ids.shape == (2, 3 + 4) and part.response_mask.shape == (2, 4)
    assert part.response_mask.sum().item() == 2 + 4  # no real token was cut
    assert torch.equal(part.input_ids, batch.input_ids[[0, 3], :7])


def test_multi_turn_length_counts_environment_tokens():
    """A masked-out environment observation inside the completion still needs its columns."""
    batch = padded_batch([5])
    batch.response_mask[0, 2:4] = 0  # environment tokens: attended to, not trained on
    assert batch.response_lengths().tolist() == [5]


def test_micro_batches_sorted_bounded_and_complete():
    lengths = torch.tensor([3, 30, 5, 29, 4, 6, 2, 31])
    rows = torch.arange(8)
    batches = length_sorted_micro_batches(rows, lengths, max_rows=3, max_tokens=100, prompt_length=4)
    flat = torch.cat(batches).tolist()
    assert sorted(flat) == list(range(8))  # every row exactly once
    assert [int(lengths[i]) for i in flat] == sorted(lengths.tolist(), reverse=True)  # longest first
    for micro in batches:
        width = 4 + int(lengths[micro].max())
        assert len(micro) <= 3 and (len(micro) == 1 or len(micro) * width <= 100)
    assert length_sorted_micro_batches(rows, lengths, max_rows=64, max_tokens=None, prompt_length=4)[0].numel() == 8
    assert length_sorted_micro_batches(rows, lengths, max_rows=64, max_tokens=1, prompt_length=4)[0].numel() == 1
    assert length_sorted_micro_batches(rows[:0], lengths, 4, None, 4) == []


SINGLE_STEP = ("algorithm=grpo", "algorithm.num_minibatches=1", "trainer.max_steps=3", "monitor.kl_ref=true")
COMPARED = ("train/loss", "train/entropy", "train/entropy_after", "train/entropy_sampled", "train/kl_ref",
            "train/grad_norm", "train/reward_mean", "train/entropy_pred_delta", "train/pg_loss", "train/approx_kl",
            "train/clipfrac_low", "train/clipfrac_high")


def run_metrics(make_config, *overrides):
    return train(make_config(*SINGLE_STEP, *overrides))


def assert_same(a: dict, b: dict, rel: float):
    for key in COMPARED:
        assert key in a and key in b, key
        assert math.isclose(a[key], b[key], rel_tol=rel, abs_tol=1e-6), (key, a[key], b[key])


@pytest.mark.parametrize("epochs", [1, 2])
def test_fused_old_logprobs_equal_a_separate_pass(make_config, epochs):
    """One minibatch per epoch: taking the old log-probs and entropy from the first step's forward
    pass gives the same run as computing them in a separate no-grad pass (with 2 epochs the
    second epoch's ratio moves away from 1 and its clipping reads them)."""
    fused = run_metrics(make_config, f"algorithm.ppo_epochs={epochs}", "trainer.fuse_old_logprobs=true",
                        "run_name=fused")
    separate = run_metrics(make_config, f"algorithm.ppo_epochs={epochs}", "trainer.fuse_old_logprobs=false",
                           "run_name=separate")
    if epochs == 1:
        assert fused["train/ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    else:
        assert abs(fused["train/ratio_mean"] - 1.0) > 1e-6  # the mean over both epochs' steps
    assert_same(fused, separate, rel=1e-4)


def test_token_budget_micro_batches_equal_whole_batch(make_config):
    """Trimmed micro-batches of a few rows each train like one untrimmed pass over the batch."""
    small = run_metrics(make_config, "algorithm.ppo_epochs=1", "trainer.micro_batch_tokens=40", "trainer.micro_batch_size=3", "run_name=small")
    whole = run_metrics(make_config, "algorithm.ppo_epochs=1", "trainer.micro_batch_tokens=null", "trainer.micro_batch_size=1000",
                        "run_name=whole")
    assert_same(small, whole, rel=1e-4)


@pytest.mark.parametrize("upcast_head", [False, True])
def test_shared_prompt_prefix_equals_full_forward(upcast_head):
    """Computing each prompt once per group (its KV cache gathered to the group's rows) gives the
    log-probs, entropy and parameter gradients of the plain forward pass over every row."""
    from rlx.models import char_tokenizer, tiny_causal_lm
    from rlx.learner.token_stats import ForwardSettings, response_token_stats, shared_prompt_rows
    from rlx.rollout import sample_rollouts

    tokenizer = char_tokenizer("0123456789+*T=:")
    model = tiny_causal_lm(tokenizer, "qwen2", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                           max_position_embeddings=64, seed=5)
    torch.manual_seed(0)
    batch = sample_rollouts(model, tokenizer, ["T=17:", "T=5:", "T=123:"], 4, max_new_tokens=6)
    assert shared_prompt_rows(batch) is not None  # the shared path runs (3 prompts for 12 rows)
    results = []
    for share in (False, True):
        model.zero_grad()
        settings = ForwardSettings(temperature=0.8, chunk_size=16, upcast_head=upcast_head, share_prompts=share)
        stats = response_token_stats(model, batch, settings, with_entropy=True)
        mask = batch.response_mask
        ((stats.logprobs * mask).sum() + 0.3 * (stats.entropy * mask).sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((stats.logprobs * mask, stats.entropy * mask, grads))
    for full, shared in zip(*results):
        torch.testing.assert_close(shared, full, atol=2e-5, rtol=1e-4)


def test_prompt_sharing_needs_identical_prompts():
    from rlx.learner.token_stats import shared_prompt_rows

    batch = padded_batch([2, 3, 4, 1])
    batch.prompt_index = torch.tensor([0, 0, 1, 1])
    assert shared_prompt_rows(batch) is None  # padded_batch gives every row different prompt ids
    batch.input_ids[:, :batch.prompt_length] = batch.input_ids[0, :batch.prompt_length]
    first, inverse = shared_prompt_rows(batch)
    assert inverse.tolist() == [0, 0, 1, 1] and len(first) == 2
