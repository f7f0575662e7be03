"""Sampler/trainer mismatch correction (algorithm.rollout_correction, verl's keys): truncated and
masked importance sampling at token, sequence and geometric level, against a plain per-token loop."""

from __future__ import annotations

import math

import pytest
import torch

from rlx.config import ConfigError, validate
from rlx.objectives import policy_loss, rollout_is_weights, rollout_rs_mask

B, T = 5, 7


def batch(seed: int = 0):
    """Old (trainer) and sampler log-probs a few percent apart, some far apart, ragged lengths."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    sampler = old + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.4
    lp = (old + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.2).requires_grad_()
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    lengths = [7, 5, 1, 6, 3]
    mask = torch.tensor([[1.0 if t < n else 0.0 for t in range(T)] for n in lengths], dtype=torch.float64)
    return lp, old, sampler, adv, mask


def loop_rho(old, sampler, mask, level):
    """rho per (row, token) by plain python: token ratio, product or geometric mean over the row."""
    rho = [[0.0] * T for _ in range(B)]
    for i in range(B):
        ts = [t for t in range(T) if mask[i, t]]
        logs = [float(old[i, t] - sampler[i, t]) for t in ts]
        for t, d in zip(ts, logs):
            if level == "token":
                x = d
            elif level == "sequence":
                x = sum(logs)
            else:
                x = sum(logs) / len(logs)
            rho[i][t] = math.exp(max(-20.0, min(20.0, x)))
    return rho


def loop_ppo_loss(lp, old, adv, mask, weights, keep, clip_low=0.2, clip_high=0.28):
    """token-mean PPO loss with each term times its weight, over the kept tokens, by plain python."""
    total, count = 0.0, 0
    for i in range(B):
        for t in range(T):
            if not (mask[i, t] and keep[i][t]):
                continue
            r = torch.exp(lp[i, t] - old[i, t])
            a = float(adv[i])
            term = torch.maximum(-a * r, -a * r.clamp(1 - clip_low, 1 + clip_high))
            total = total + weights[i][t] * term
            count += 1
    return total / max(count, 1)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_truncated_is_weights_and_loss_equal_a_plain_loop(level):
    lp, old, sampler, adv, mask = batch()
    threshold = 1.3
    weights, metrics = rollout_is_weights(old, sampler, mask, level, threshold)
    rho = loop_rho(old, sampler, mask, level)
    expected = [[min(rho[i][t], threshold) if mask[i, t] else 0.0 for t in range(T)] for i in range(B)]
    torch.testing.assert_close(weights, torch.tensor(expected, dtype=torch.float64))
    valid = [(i, t) for i in range(B) for t in range(T) if mask[i, t]]
    assert float(metrics["rollout_is_mean"]) == pytest.approx(sum(expected[i][t] for i, t in valid) / len(valid))
    assert float(metrics["rollout_is_max"]) == pytest.approx(max(rho[i][t] for i, t in valid))
    high = sum(rho[i][t] > threshold for i, t in valid) / len(valid)
    assert float(metrics["rollout_is_ratio_fraction_high"]) == pytest.approx(high) and 0 < high < 1

    loss, _ = policy_loss("ppo", lp, old, adv, mask, clip_ratio_low=0.2, clip_ratio_high=0.28,
                          loss_agg_mode="token-mean", rollout_is_weights=weights)
    (grad,) = torch.autograd.grad(loss, lp)
    keep_all = [[True] * T for _ in range(B)]
    reference = loop_ppo_loss(lp, old, adv, mask, expected, keep_all)
    (grad_ref,) = torch.autograd.grad(reference, lp)
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad, grad_ref)


@pytest.mark.parametrize("level", ["token", "sequence", "geometric"])
@pytest.mark.parametrize("lower", [None, 0.0])
def test_masked_is_drops_what_a_plain_loop_drops(level, lower):
    lp, old, sampler, adv, mask = batch(1)
    upper = {"token": 1.5, "sequence": 2.0, "geometric": 1.1}[level]
    keep, metrics = rollout_rs_mask(old, sampler, mask, level, upper, lower)
    rho = loop_rho(old, sampler, mask, level)
    low = 1 / upper if lower is None else lower
    expected = [[bool(mask[i, t]) and low <= rho[i][t] <= upper for t in range(T)] for i in range(B)]
    assert keep.tolist() == expected
    valid = [(i, t) for i in range(B) for t in range(T) if mask[i, t]]
    dropped = [(i, t) for i, t in valid if not expected[i][t]]
    assert 0 < len(dropped) < len(valid)
    assert float(metrics["rollout_rs_masked_fraction"]) == pytest.approx(len(dropped) / len(valid))
    assert float(metrics["rollout_rs_seq_masked_fraction"]) == pytest.approx(len({i for i, _ in dropped}) / B)
    if level != "token":  # a row is kept or dropped as a whole
        assert all(len({expected[i][t] for t in range(T) if mask[i, t]}) == 1 for i in range(B))

    # masked importance sampling: the kept tokens weighted by min(rho, C), the dropped ones leave
    # the loss and its normaliser (the learner passes the kept mask)
    weights, _ = rollout_is_weights(old, sampler, mask, "token", 2.0)
    loss, _ = policy_loss("ppo", lp, old, adv, mask * keep, clip_ratio_low=0.2, clip_ratio_high=0.28,
                          loss_agg_mode="token-mean", rollout_is_weights=weights)
    token_rho = loop_rho(old, sampler, mask, "token")
    w = [[min(token_rho[i][t], 2.0) for t in range(T)] for i in range(B)]
    reference = loop_ppo_loss(lp, old, adv, mask, w, expected)
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(torch.autograd.grad(loss, lp)[0], torch.autograd.grad(reference, lp)[0])


def test_weights_of_one_are_the_uncorrected_loss_for_every_loss():
    lp, old, _, adv, mask = batch(2)
    ones, metrics = rollout_is_weights(old, old, mask, "token", 2.0)
    assert float(metrics["rollout_is_mean"]) == 1.0 and float(metrics["rollout_is_ratio_fraction_high"]) == 0.0
    for name, kw in [("ppo", {}), ("reinforce", {}), ("gspo", {}), ("cispo", {}), ("loop", {})]:
        plain, _ = policy_loss(name, lp, old, adv, mask, **kw)
        weighted, _ = policy_loss(name, lp, old, adv, mask, rollout_is_weights=ones, **kw)
        torch.testing.assert_close(weighted, plain)


def test_bad_levels_and_thresholds_are_refused():
    _, old, sampler, _, mask = batch()
    with pytest.raises(ValueError, match="rollout_is="):
        rollout_is_weights(old, sampler, mask, "geometric")
    with pytest.raises(ValueError, match="rollout_rs_threshold"):
        rollout_rs_mask(old, sampler, mask, "token", 2.0, 3.0)


@pytest.mark.parametrize("overrides,key", [
    (["algorithm.rollout_correction.rollout_is=tokens"], "algorithm.rollout_correction.rollout_is"),
    (["algorithm.rollout_correction.rollout_is=token", "precision=bf16_true_logp_bf16_old_sampler"],
     "precision.old_logprobs"),
    (["algorithm.rollout_correction.rollout_rs=token", "algorithm.rollout_correction.rollout_rs_threshold_lower=3"],
     "algorithm.rollout_correction.rollout_rs_threshold_lower"),
])
def test_config_refuses_a_correction_that_cannot_work(make_config, overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(make_config("algorithm=dapo", *overrides))


@pytest.mark.slow
def test_a_corrected_run_logs_the_weights(make_config, store):
    from mlflow.tracking import MlflowClient

    from rlx.train import train

    cfg = make_config("algorithm=dapo", "precision=bf16_mixed_logp_bf16_old_trainer", "trainer.max_steps=1",
                      "algorithm.rollout_correction.rollout_is=token", "algorithm.rollout_correction.rollout_rs=sequence",
                      "algorithm.rollout_correction.rollout_rs_threshold=1.01", "run_name=corrected")
    train(cfg)
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("expression").experiment_id],
                             filter_string="tags.mlflow.runName = 'corrected'")[0]
    m = run.data.metrics
    # bf16 sampler copy vs the trainer's autocast forward: weights near, not at, 1
    assert 0.9 < m["rollout_corr/rollout_is_mean"] < 1.1 and m["rollout_corr/rollout_is_max"] > 1.0
    assert 0.0 <= m["rollout_corr/rollout_is_ratio_fraction_high"] < 0.5
    assert 0.0 < m["rollout_corr/rollout_rs_seq_masked_fraction"] < 1.0
    assert m["precision/ratio_bias"] == 0.0  # the correction leaves the trainer's old log-probs exact
