"""Numerical precision as an experiment axis: dtypes, the log-prob arithmetic every pass shares
(logprobs_in_dtype, step_logprobs, fp32_head_logits: the trainer's forward, the old-log-prob pass
and the sampler form log-probs alike), the bf16 spacing of a value (dtype_spacing), and the
sampler/trainer mismatch diagnostics of Theorem 3 (bf16 ratios are biased upward, which acts as
extra clipping in the entropy-reducing direction).
"""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def dtype_of(name: str, key: str = "precision") -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"{key}={name!r}: allowed {sorted(DTYPES)}")
    return DTYPES[name]


def logprobs_in_dtype(logits: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """log softmax(logits)[labels] computed entirely in `dtype` (e.g. bf16: the setting whose
    rounding biases the ratio), returned as fp32 values that carry that rounding."""
    return torch.log_softmax(logits.to(dtype), dim=-1).gather(-1, labels[..., None]).squeeze(-1).float()


def step_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float,
                  logprob_dtype: torch.dtype) -> torch.Tensor:
    """A sampler's log-probs of the sampled tokens of one generation step, logits [N, V], tokens [N]:
    log softmax(logits / temperature)[tokens] in fp32 (fp32 log-softmax of the upcast logits),
    or, for another logprob_dtype, formed as the trainer forms it: logits / temperature in the
    logits' dtype, then log-softmax in logprob_dtype (logprobs_in_dtype)."""
    if logprob_dtype == torch.float32:
        return (logits.float() / temperature).log_softmax(-1).gather(-1, tokens[:, None]).squeeze(-1)
    scaled = logits / temperature if temperature != 1.0 else logits
    return logprobs_in_dtype(scaled, tokens, logprob_dtype)


def fp32_head_logits(head: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """logits = hidden @ W^T (+ b) with the LM head's weights and the hidden states upcast to fp32,
    outside any autocast region (precision.upcast_head; the trainer and rlx's sampler use it).
    Differentiable: the gradient reaches the head's own (e.g. bf16) weights."""
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        bias = None if head.bias is None else head.bias.float()
        return torch.nn.functional.linear(hidden.float(), head.weight.float(), bias)


def dtype_spacing(values: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The gap between adjacent representable numbers of `dtype` at abs(values) (one ulp):
    eps(dtype) * 2^floor(log2 abs(x)), for normal numbers (bf16: eps = 2^-7, so a log-prob of
    -10 is stored to within 2^3 * 2^-7 / 2 = 0.031 nats, a ratio error of about 3%).
    Returned in fp32; values below the smallest normal get the spacing of the smallest normal."""
    info = torch.finfo(dtype)
    magnitude = values.float().abs().clamp(min=info.tiny)
    return info.eps * torch.exp2(torch.floor(torch.log2(magnitude)))


def logp_mismatch(sampler_logprobs: torch.Tensor, trainer_logprobs: torch.Tensor,
                  mask: torch.Tensor) -> tuple[float, float]:
    """(mean, max) of |logp_sampler - logp_trainer| over the response tokens."""
    diff = (sampler_logprobs.float() - trainer_logprobs.float()).abs() * mask
    n = mask.sum().clamp(min=1)
    return float(diff.sum() / n), float(diff.max()) if mask.any() else 0.0


def ratio_bias(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> float:
    """mean_t(exp(lp_t - lp_old_t)) - 1 over the response tokens: 0 when exactly on-policy."""
    ratio = torch.exp(logprobs.float() - old_logprobs.float())
    return float((ratio * mask).sum() / mask.sum().clamp(min=1) - 1.0)


def clip_binds(ratio: torch.Tensor, advantages: torch.Tensor, clip_low: float, clip_high: float) -> torch.Tensor:
    """Where the PPO clip removes the token's gradient: A > 0 and r > 1 + high, or A < 0 and r < 1 - low."""
    return ((advantages > 0) & (ratio > 1 + clip_high)) | ((advantages < 0) & (ratio < 1 - clip_low))


def clip_flips(ratio: torch.Tensor, ratio_fp32: torch.Tensor, advantages: torch.Tensor, logprobs: torch.Tensor,
               entropy: torch.Tensor, mask: torch.Tensor, clip_low: float, clip_high: float) -> dict[str, float]:
    """How often the configured precision's clip decision differs from an fp32 recomputation of
    the same ratio, and in which direction.

    A token's update raises entropy when A * L < 0 with L = lp + H (Theorem 1: dH ~ -A L pi).
    A flip pushes toward lower entropy when the configured precision clips an entropy-raising
    update that fp32 lets through, or lets through an entropy-lowering one that fp32 clips.
    Returns flip_frac (of response tokens) and lowering_frac (of flips; nan without flips).
    """
    valid = mask.bool()
    clipped = clip_binds(ratio, advantages, clip_low, clip_high)
    clipped_fp32 = clip_binds(ratio_fp32, advantages, clip_low, clip_high)
    flips = (clipped != clipped_fp32) & valid
    raising = advantages * (logprobs + entropy) < 0
    lowering = flips & (clipped == raising)
    n_flips = int(flips.sum())
    return {
        "clip_flip_frac": n_flips / max(1, int(valid.sum())),
        "clip_flip_lowering_frac": int(lowering.sum()) / n_flips if n_flips else float("nan"),
        "clip_flips": float(n_flips),
    }


TRAINER_PRECISIONS = ("32-true", "bf16-true", "bf16-mixed", "16-mixed", "16-true")


def lightning_precision(trainer_precision: str, accelerator: str) -> dict:
    """Trainer(**kwargs) for a precision: the flag itself, except fp16 mixed on the CPU, where
    Lightning would silently switch to bf16-mixed: there the fp16 AMP plugin (autocast to fp16
    plus a GradScaler for loss scaling) is passed explicitly."""
    if trainer_precision not in TRAINER_PRECISIONS:
        raise ValueError(f"precision.trainer_precision={trainer_precision!r}: allowed {list(TRAINER_PRECISIONS)}")
    if trainer_precision == "16-mixed" and accelerator == "cpu":
        from lightning.pytorch.plugins.precision import MixedPrecision

        return {"plugins": [MixedPrecision("16-mixed", device="cpu", scaler=torch.amp.GradScaler("cpu"))]}
    return {"precision": trainer_precision}
