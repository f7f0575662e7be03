"""Side-by-side benchmark: the same GRPO workload through rlx and through TRL's GRPOTrainer.

    .venv/bin/python benchmarks/trl_bench.py                      # the full grid, a markdown table
    .venv/bin/python benchmarks/trl_bench.py --models 1m --precisions fp32 --epochs 1 --runs 3
    .venv/bin/python benchmarks/trl_bench.py --smoke              # one iteration per side (the CI test)

Workload, identical on both sides: a Qwen2-style model built from conf/model/qwen2_<size>.yaml
(1m: 0.99M, 8m: 8.4M parameters) and warm-started once on the default expression task (both sides
load the same saved weights and the same character tokenizer, so rewards and gradients are
non-zero), `--prompts` prompts x `--group` samples per iteration, at most `--max-new-tokens` new
tokens, temperature 1 with the full distribution (top_k=0, top_p=1), the task's reward, the GRPO
objective (group-normalised advantage, PPO clip 0.2, per-sequence token mean, no KL, AdamW at a
constant learning rate, gradient clip 1), one optimizer step per epoch over the whole rollout
batch and `--epochs` epochs per rollout (TRL: num_iterations). fp32 means fp32 everywhere (TRL's
bf16 default and gradient checkpointing are turned off); bf16 means bf16 autocast over fp32
master weights on both sides (TRL `bf16=True`, rlx `precision=bf16_mixed`), the same arithmetic.
rlx runs as `rlx-train` would (Hydra config, Lightning Trainer, MLflow logging to a throw-away
sqlite store) with its extra monitors off (`monitor.kl_ref=false monitor.entropy_dynamics=false
precision.diagnostics=false`) because TRL has no equivalent; its exact fp32 entropy stays on
(TRL logs entropy too). TRL logs nowhere (report_to=none).

Each run is its own process (so its peak RSS is its own): rlx and TRL alternate (A B A B ...),
`--runs` runs each; a run does `--warmup` iterations, then `--iterations` timed ones (one
iteration = one rollout and its epochs; timed from the start of one to the start of the next,
so logging is included). Printed per setting: medians over runs of seconds per iteration,
completions/s, generated tokens/s (EOS included) and peak RSS, and the median of the per-pair
rlx/TRL time ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MB = 1024.0
# Warm-start steps of the shared base policy per model size: enough for non-zero rewards (the
# larger model learns the format in fewer steps and each of its steps costs more).
WARMSTART_STEPS = {"1m": 300, "8m": 150, "30m": 100}


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MB


def current_rss_mb() -> float:
    """Current resident set size of this process in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB / MB


def trl_available() -> bool:
    return importlib.util.find_spec("trl") is not None


# ------------------------------------------------------------------------------ shared workload
def rlx_overrides(s: dict) -> list[str]:
    """The rlx-train overrides that give the benchmark's workload (also printed for users)."""
    return [
        "algorithm=grpo", f"model=qwen2_{s['model']}",
        f"precision={'fp32' if s['precision'] == 'fp32' else 'bf16_mixed'}",
        f"task.prompts_per_step={s['prompts']}", f"algorithm.group_size={s['group']}",
        f"rollout.max_new_tokens={s['max_new_tokens']}", f"algorithm.ppo_epochs={s['epochs']}",
        "algorithm.num_minibatches=1", f"optim.lr={s['lr']}", f"task.warmstart.steps={s['warmstart_steps']}",
        "monitor.kl_ref=false", "monitor.entropy_dynamics=false", "precision.diagnostics=false",
        "eval_every=0", "checkpoint.every=100000", f"seed={s['seed']}",
    ] + list(s.get("rlx_extra", []))


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rlx.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def prepare_base_policy(s: dict) -> str:
    """Warm-start (once, cached under outputs/cache) the policy both sides start from; its directory."""
    from rlx.build import instantiate_task, task_identity
    from rlx.warmstart import base_policy

    cfg = compose(rlx_overrides(s) + [f"cache_dir={s['cache_dir']}"])
    task = instantiate_task(cfg.task)
    _model, _tokenizer, out_dir = base_policy(task, task_identity(cfg.task), cfg.model, cfg.task.warmstart,
                                              cfg.cache_dir)
    return str(out_dir)


# ------------------------------------------------------------------------------ rlx worker
def run_rlx(s: dict) -> dict:
    """Run rlx-train's code path (train()) with a timer callback; per-iteration times and sizes."""
    import lightning as L

    from rlx.train import train

    class Timer(L.Callback):
        def __init__(self):
            self.starts, self.rows = [], []

        def on_train_epoch_start(self, trainer, pl_module):
            self.starts.append(time.perf_counter())

        def on_train_epoch_end(self, trainer, pl_module):
            m = pl_module.last_metrics
            self.rows.append({"tokens": m["train/response_length"] * s["prompts"] * s["group"],
                              "reward": m["train/reward_mean"],
                              **{k.split("/")[1]: m[k] for k in m if k.startswith("time/")}})

    timer = Timer()
    total = s["warmup"] + s["iterations"] + 1  # the last start closes the last timed iteration
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(rlx_overrides(s) + [
            f"trainer.max_steps={total}", f"cache_dir={s['cache_dir']}", f"checkpoint.dir={tmp}/ckpt",
            f"logger.tracking_uri=sqlite:///{tmp}/mlflow.db", "logger.log_generations=0"])
        rss_start = current_rss_mb()
        train(cfg, callbacks=[timer])
    times = [b - a for a, b in zip(timer.starts, timer.starts[1:])][s["warmup"]:]
    rows = timer.rows[s["warmup"]:s["warmup"] + len(times)]
    return {"times": times, "tokens": [r["tokens"] for r in rows], "rewards": [r["reward"] for r in rows],
            "stages": rows, "rss_start_mb": rss_start}


# ------------------------------------------------------------------------------ TRL worker
def run_trl(s: dict) -> dict:
    """TRL's GRPOTrainer on the same base policy, task, reward and settings."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlx.build import instantiate_task

    torch.manual_seed(s["seed"])
    cfg = compose(rlx_overrides(s))
    task = instantiate_task(cfg.task)
    tokenizer = AutoTokenizer.from_pretrained(s["base_dir"])
    model = AutoModelForCausalLM.from_pretrained(s["base_dir"], dtype=torch.float32)
    by_text = {tokenizer.bos_token + p.text: p for p in task.train_prompts()}  # rlx prepends <bos> too
    dataset = Dataset.from_list([{"prompt": text} for text in by_text])

    def reward(prompts, completions, **_):
        return [task.reward(by_text[p], c) for p, c in zip(prompts, completions)]

    class Timer(TrainerCallback):
        def __init__(self):
            self.starts, self.lengths, self.rewards = [], [], []

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step % s["epochs"] == 0:  # a new rollout starts every `epochs` steps
                self.starts.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs and (state.global_step - 1) % s["epochs"] == 0:
                self.lengths.append(logs["completions/mean_length"])
                self.rewards.append(logs.get("reward", float("nan")))

    n_total = s["warmup"] + s["iterations"] + 1
    with tempfile.TemporaryDirectory() as tmp:
        args = GRPOConfig(
            output_dir=tmp, per_device_train_batch_size=s["prompts"] * s["group"], num_generations=s["group"],
            gradient_accumulation_steps=1, num_iterations=s["epochs"], max_completion_length=s["max_new_tokens"],
            temperature=1.0, top_k=0, top_p=1.0, learning_rate=s["lr"], lr_scheduler_type="constant",
            warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, beta=0.0, epsilon=0.2, loss_type="grpo",
            scale_rewards="group", max_steps=n_total * s["epochs"], logging_steps=1, report_to="none",
            save_strategy="no", gradient_checkpointing=False, bf16=s["precision"] == "bf16", use_cpu=True,
            seed=s["seed"], disable_tqdm=True, dataloader_num_workers=0)
        timer = Timer()
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[timer])
        rss_start = current_rss_mb()
        trainer.train()
    times = [b - a for a, b in zip(timer.starts, timer.starts[1:])][s["warmup"]:]
    n = s["prompts"] * s["group"]
    lengths = timer.lengths[s["warmup"]:s["warmup"] + len(times)]
    return {"times": times, "tokens": [length * n for length in lengths],
            "rewards": timer.rewards[s["warmup"]:s["warmup"] + len(times)], "rss_start_mb": rss_start}


def worker(side: str, setting: dict) -> None:
    """One run in this process; prints one JSON line."""
    if setting.get("threads"):
        import torch

        torch.set_num_threads(setting["threads"])
    result = run_rlx(setting) if side == "rlx" else run_trl(setting)
    result.update(side=side, peak_rss_mb=peak_rss_mb())
    print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------ driver
def launch(side: str, setting: dict, timeout: float) -> dict:
    """Run one worker process and parse its RESULT line."""
    cmd = [sys.executable, __file__, "--worker", side, "--setting", json.dumps(setting)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{side} run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def summarize(runs: list[dict], n_completions: int) -> dict:
    """Medians over runs of each run's median iteration time, throughput and peak RSS."""
    per_run = [statistics.median(r["times"]) for r in runs]
    tokens = [statistics.median(t / x for t, x in zip(r["tokens"], r["times"])) for r in runs if r["tokens"]]
    return {"s_per_iter": statistics.median(per_run), "completions_per_s": statistics.median(n_completions / t for t in per_run),
            "tokens_per_s": statistics.median(tokens) if tokens else float("nan"),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
            "reward": statistics.median(x for r in runs for x in r["rewards"]) if any(r["rewards"] for r in runs) else float("nan")}


def stage_medians(runs: list[dict]) -> dict:
    """Median seconds of each rlx stage (time/* metrics) over every timed iteration of every run."""
    keys = sorted({k for r in runs for row in r.get("stages", []) for k in row if k.endswith("_s")})
    return {k: statistics.median(row[k] for r in runs for row in r["stages"] if k in row) for k in keys}


def table(rows: list[dict]) -> str:
    head = ("| model | precision | epochs | side | s/iteration | completions/s | tokens/s | peak RSS MiB | reward "
            "| rlx/TRL time |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['model']} | {r['precision']} | {r['epochs']} | {r['side']} | {r['s_per_iter']:.3f} | "
                     f"{r['completions_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['reward']:.2f} | {r.get('ratio', '')} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["1m", "8m"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--epochs", nargs="+", type=int, default=[1, 2])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--warmstart-steps", type=int, default=None,
                   help=f"warm-start steps of the shared base policy (default per model: {WARMSTART_STEPS})")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    p.add_argument("--cache-dir", default=str(ROOT / "outputs" / "cache"))
    p.add_argument("--smoke", action="store_true", help="one tiny iteration per side (CI): 1m, fp32, 1 epoch")
    p.add_argument("--sides", nargs="+", default=["rlx", "trl"], choices=["rlx", "trl"])
    p.add_argument("--timeout", type=float, default=3600, help="seconds before a run is considered hung")
    p.add_argument("--json", help="write every run's raw result here")
    p.add_argument("--worker", choices=["rlx", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--setting", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a.worker, json.loads(a.setting))
        return
    if a.smoke:
        a.models, a.precisions, a.epochs, a.runs, a.warmup, a.iterations = ["1m"], ["fp32"], [1], 1, 0, 1
        a.prompts, a.group, a.max_new_tokens, a.warmstart_steps = 2, 4, 8, 5
    sides = list(a.sides)
    if "trl" in sides and not trl_available():
        print("trl_bench: TRL is not installed, so its side is skipped "
              "(install the extra: pip install -e '.[bench]' with torch==2.13.0 kept)")
        sides.remove("trl")
    rows, raw = [], []
    for model in a.models:
        for precision in a.precisions:
            for epochs in a.epochs:
                setting = dict(model=model, precision=precision, epochs=epochs, prompts=a.prompts, group=a.group,
                               max_new_tokens=a.max_new_tokens, lr=1e-4, seed=0, warmup=a.warmup,
                               iterations=a.iterations,
                               warmstart_steps=a.warmstart_steps or WARMSTART_STEPS.get(model, 300),
                               cache_dir=a.cache_dir, threads=a.threads)
                setting["base_dir"] = prepare_base_policy(setting)
                print(f"setting {model} {precision} epochs={epochs}: rlx-train " + " ".join(rlx_overrides(setting)),
                      flush=True)
                results = {side: [] for side in sides}
                for run in range(a.runs):  # interleaved: rlx, TRL, rlx, TRL, ...
                    for side in sides:
                        result = launch(side, {**setting, "seed": run}, a.timeout)
                        results[side].append(result)
                        raw.append({**setting, **result, "run": run})
                        print(f"  run {run} {side}: median {statistics.median(result['times']):.3f} s/iteration, "
                              f"peak RSS {result['peak_rss_mb']:.0f} MiB", flush=True)
                n = a.prompts * a.group
                for side in sides:
                    row = dict(model=model, precision=precision, epochs=epochs, side=side,
                               **summarize(results[side], n))
                    if side == "rlx":
                        row["stages"] = stage_medians(results["rlx"])
                    rows.append(row)
                if len(sides) == 2:
                    ratios = [statistics.median(x["times"]) / statistics.median(y["times"])
                              for x, y in zip(results["rlx"], results["trl"])]
                    rows[-2]["ratio"] = f"{statistics.median(ratios):.2f} (TRL/rlx {1 / statistics.median(ratios):.2f}x)"
    print(table(rows))
    for r in rows:
        if "stages" in r:
            print(f"rlx stages {r['model']} {r['precision']} epochs={r['epochs']}: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in r["stages"].items()))
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "runs": raw}, indent=1))


if __name__ == "__main__":
    main()
