"""LoRA through real peft on the tiny model: only the adapters train, the reference policy is the
base model with the adapters disabled (its log-probs equal the untouched base model's) and no
second copy of the weights is held."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("peft", reason="LoRA needs the [lora] extra: pip install 'rlx[lora]'")

from rlx.models import build_model, char_tokenizer, is_lora_model, parameter_bytes, prepare_policy  # noqa: E402
from rlx.build import instantiate_task  # noqa: E402
from rlx.learner import ForwardSettings, Learner, batched_token_stats, response_token_stats  # noqa: E402

LORA = ["model.lora.enabled=true", "model.lora.r=4", "model.lora.alpha=8", "algorithm=grpo", "optim.lr=1e-2",
        "task.prompts_per_step=4", "algorithm.group_size=4"]
PLAIN = ForwardSettings(temperature=1.0, chunk_size=1024)  # the log-probs of the model as it is


def lora_learner(cfg):
    """(learner, its AdamW over the trainable parameters, the untouched base model)."""
    task = instantiate_task(cfg.task)
    tokenizer = char_tokenizer(task.alphabet())
    base = build_model(cfg.model, tokenizer, seed=0)
    pristine = copy.deepcopy(base)
    policy = prepare_policy(base, tokenizer, cfg.model, cfg.trainer)
    learner = Learner(policy, tokenizer, task, cfg)
    return learner, learner.make_optimizer(), pristine.eval()


def one_update(learner, optimizer, seed: int = 0):
    """Collect a rollout batch, then train on it with random sequence advantages."""
    torch.manual_seed(seed)
    rollout, metrics = learner.collect(0)
    rollout.extras["advantages"] = torch.randn(len(rollout.completions), generator=torch.Generator().manual_seed(seed))
    return rollout, metrics, learner.train_on(rollout, optimizer, 0)


def held_parameters(learner) -> int:
    """Parameters the learner holds: the policy's and the reference copy's (if any)."""
    models = [learner.policy] + ([learner.reference] if learner.reference is not None else [])
    return sum(p.numel() for model in models for p in model.parameters())


def test_only_the_adapters_change(make_config):
    learner, optimizer, _ = lora_learner(make_config(*LORA))
    assert is_lora_model(learner.policy)
    trainable = {n for n, p in learner.policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in learner.policy.named_parameters()}
    _, _, metrics = one_update(learner, optimizer)
    assert metrics["train/optimizer_steps"] >= 1
    changed = {n for n, p in learner.policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    assert any("lora_B" in n for n in changed)  # B starts at 0, so it must have moved for the policy to move


def test_reference_is_the_base_model_with_adapters_disabled(make_config):
    learner, optimizer, pristine = lora_learner(make_config(*LORA, "monitor.kl_ref=true"))
    assert learner.reference is None and learner.reference_is_base  # no second copy of the weights
    one_update(learner, optimizer)  # the adapters move away from zero
    torch.manual_seed(1)
    rollout, metrics = learner.collect(1)
    with torch.no_grad():
        base_lp = response_token_stats(pristine, rollout, PLAIN, with_entropy=False).logprobs
        policy_lp = response_token_stats(learner.policy, rollout, PLAIN, with_entropy=False).logprobs
    mask = rollout.response_mask.bool()
    torch.testing.assert_close(rollout.extras["ref_logprobs"][mask], base_lp[mask], rtol=1e-5, atol=1e-5)
    assert (policy_lp[mask] - base_lp[mask]).abs().max() > 1e-4  # the policy itself has moved
    assert metrics["train/kl_ref"] > 0
    # the adapters are back on after the reference pass
    torch.testing.assert_close(batched_token_stats(learner.policy, rollout, learner.settings, False).logprobs[mask],
                               policy_lp[mask])


def test_memory_lora_reference_holds_no_copy(make_config):
    """Without LoRA the reference is a frozen copy (as many bytes as the policy); with LoRA it costs
    nothing and the optimizer holds state only for the adapters."""
    full, _, _ = lora_learner(make_config("algorithm=grpo", "monitor.kl_ref=true"))
    lora, lora_optimizer, _ = lora_learner(make_config(*LORA, "monitor.kl_ref=true"))
    assert parameter_bytes(full.reference) == parameter_bytes(full.policy)
    held_full = held_parameters(full)
    held_lora = held_parameters(lora)
    assert held_full == 2 * sum(p.numel() for p in full.policy.parameters())
    assert held_lora == sum(p.numel() for p in lora.policy.parameters())  # policy (base + adapters) only
    assert parameter_bytes(lora.policy, trainable_only=True) < 0.2 * parameter_bytes(full.policy)
    optimized = {id(p) for group in lora_optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in lora.policy.parameters() if p.requires_grad}  # the adapters only


def test_no_reference_when_nothing_needs_it(make_config):
    learner, optimizer, _ = lora_learner(make_config("algorithm=grpo", "monitor.kl_ref=false"))
    assert learner.reference is None and not learner.reference_is_base
    rollout, metrics, _ = one_update(learner, optimizer)
    assert "ref_logprobs" not in rollout.extras and "train/kl_ref" not in metrics


def test_gradient_checkpointing_gives_the_same_gradients(make_config):
    cfg = make_config("algorithm=grpo", "monitor.kl_ref=false")
    plain, _, _ = lora_learner(cfg)
    checkpointed, _, _ = lora_learner(make_config("algorithm=grpo", "monitor.kl_ref=false",
                                              "trainer.gradient_checkpointing=true"))
    assert checkpointed.policy.is_gradient_checkpointing
    torch.manual_seed(0)
    rollout, _ = plain.collect(0)
    grads = []
    for learner in (plain, checkpointed):
        learner.policy.zero_grad()
        lp = response_token_stats(learner.policy, rollout, PLAIN, with_entropy=False).logprobs
        (lp * rollout.response_mask).sum().backward()
        grads.append([p.grad.clone() for p in learner.policy.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_activation_offload_gives_the_same_update(make_config):
    """trainer.activation_offload keeps saved activations on the CPU; the update is unchanged."""
    results = []
    for offload in ("false", "true"):
        learner, optimizer, _ = lora_learner(make_config("algorithm=grpo", "monitor.kl_ref=false",
                                                         f"trainer.activation_offload={offload}"))
        one_update(learner, optimizer)
        results.append([p.detach().clone() for p in learner.policy.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)
