"""rlx's KV-cache sampler (shared prompt prefill, finished rows dropped) samples the policy's own
distribution, with the same batch layout as Hugging Face generate."""

import pytest
import torch

from rlx.models import char_tokenizer, tiny_causal_lm
from rlx.learner.token_stats import ForwardSettings, response_token_stats
from rlx.rollout import generate_rollouts, sample_rollouts
from rlx.rollout.sampler import filter_logits

PROMPTS = ["T=17:", "T=5:", "T=123:"]  # different lengths: left padding is exercised


@pytest.fixture(scope="module")
def policy():
    tokenizer = char_tokenizer("0123456789+*T=:")
    model = tiny_causal_lm(tokenizer, "qwen2", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                           max_position_embeddings=64, seed=3)
    with torch.no_grad():  # a random model rarely samples EOS: raise its logit so lengths vary
        model.lm_head.weight[tokenizer.eos_token_id] *= 0 if model.config.tie_word_embeddings else 1
        model.model.norm.weight.mul_(3.0)
    return model, tokenizer


def test_sampler_logprobs_equal_a_full_forward(policy):
    """The log-probs the sampler saw (KV cache, compaction, positions after left padding) are those
    of one plain forward pass over the finished batch: the trainer sees the sampling policy."""
    model, tokenizer = policy
    torch.manual_seed(0)
    batch = sample_rollouts(model, tokenizer, PROMPTS, 6, max_new_tokens=12, temperature=0.9, return_logprobs=True)
    lengths = batch.response_mask.sum(-1)
    assert batch.input_ids.shape[0] == 18 and lengths.min() < lengths.max()  # rows finished at different steps
    settings = ForwardSettings(temperature=0.9, chunk_size=64)
    trainer = response_token_stats(model, batch, settings, with_entropy=False).logprobs
    mask = batch.response_mask.bool()
    torch.testing.assert_close(batch.extras["sampler_logprobs"][mask], trainer[mask], atol=1e-5, rtol=1e-5)


def test_same_layout_as_hf_generate(policy):
    model, tokenizer = policy
    ours = sample_rollouts(model, tokenizer, PROMPTS, 4, max_new_tokens=5, min_new_tokens=5)
    theirs = generate_rollouts(model, tokenizer, PROMPTS, 4, max_new_tokens=5, min_new_tokens=5)
    for name in ("input_ids", "attention_mask", "response_mask", "truncated", "prompt_index"):
        assert getattr(ours, name).shape == getattr(theirs, name).shape, name
    assert torch.equal(ours.input_ids[:, :ours.prompt_length], theirs.input_ids[:, :theirs.prompt_length])
    assert ours.truncated.all() and ours.response_mask.sum() == 12 * 5  # EOS forbidden for 5 tokens


def test_first_token_frequencies_match_the_softmax(policy):
    """2000 samples of the first token: frequencies within sampling error of softmax(logits / T)."""
    model, tokenizer = policy
    torch.manual_seed(1)
    batch = sample_rollouts(model, tokenizer, ["T=17:"], 2000, max_new_tokens=1, temperature=1.3)
    with torch.no_grad():
        ids = batch.input_ids[:1, :batch.prompt_length]
        probs = (model(input_ids=ids).logits[0, -1] / 1.3).softmax(-1)
    counts = torch.bincount(batch.input_ids[:, -1], minlength=len(probs)).float() / 2000
    assert (counts - probs).abs().max() < 4 * (0.25 / 2000) ** 0.5


def test_filter_logits_top_k_top_p():
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(scores, 2, 1.0)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(scores, 0, 0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(scores, 0, 0.85)).tolist() == [[False, False, False, True]]  # 0.8 < 0.85
    assert not torch.isinf(filter_logits(scores, 0, 1.0)).any()
