"""Where an rlx iteration spends its time, how it scales, and how close it gets to the CPU's peak.

    .venv/bin/python benchmarks/iteration_profile.py                 # profile + scaling + matmul peak
    .venv/bin/python benchmarks/iteration_profile.py --only profile  # one part: profile | scaling | peak
    .venv/bin/python benchmarks/iteration_profile.py --smoke         # seconds-long run (the CI test)

Profile: the benchmark workload of benchmarks/trl_bench.py (GRPO, 16 prompts x 8 samples, at most
32 new tokens, the warm-started 1m model) with rlx's monitors on, split into generation, reward,
old log-probs (with and without the exact fp32 entropy: the entropy's own cost is the
difference), reference forward, training forward + loss, backward, optimizer, entropy-dynamics
monitor and MLflow logging (one log_metrics call per iteration to a sqlite store, as in a run).

Scaling: seconds per iteration (rollout + update, monitors off) against group size (4, 8, 16),
completion length (16, 32, 64, 128 tokens, EOS suppressed so every completion has exactly that
length) and model size (1m, 8m, 30m; random init, random advantages so every update does the
same work), each changed alone from 16 prompts x 8 samples x 32 tokens on the 1m model. A
dimension grows linearly when time/size stays constant.

Peak: the best of several fp32 and bf16 matrix products (2048^3) on this CPU, and the GFLOP/s an
iteration achieves, counting 2 FLOPs per parameter per token for each forward and 4 for each
backward (attention and the tiny vocabulary's LM head left out, so it is a slight undercount).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from trl_bench import compose  # noqa: E402  (benchmarks/ is not a package)


class Stopwatch:
    """Accumulated seconds per named stage; reset() starts a new iteration's record."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._started: dict[str, float] = {}

    def reset(self) -> None:
        self.seconds = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            with self.stage(name):
                return fn(*args, **kwargs)
        return timed

    def time_optimizer(self, optimizer, name: str = "optimizer") -> None:
        """Time every optimizer.step through torch's step hooks (the optimizer itself is unchanged)."""
        def before(*_):
            self._started[name] = time.perf_counter()

        def after(*_):
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - self._started.pop(name)
        optimizer.register_step_pre_hook(before)
        optimizer.register_step_post_hook(after)


def build_learner(overrides: list[str], warm_start: bool, cache_dir: str, hooks=None, rollout_engine=None):
    """A Learner (no Trainer) with its AdamW optimizer, and its config."""
    from rlx.build import instantiate_task, task_identity
    from rlx.learner import Learner
    from rlx.models import build_model, char_tokenizer
    from rlx.warmstart import base_policy

    cfg = compose(overrides + [f"cache_dir={cache_dir}"])
    task = instantiate_task(cfg.task)
    if warm_start:
        policy, tokenizer, _ = base_policy(task, task_identity(cfg.task), cfg.model, cfg.task.warmstart, cfg.cache_dir)
    else:
        tokenizer = char_tokenizer(task.alphabet())
        policy = build_model(cfg.model, tokenizer, seed=0)
    if cfg.precision.trainer_precision == "bf16-true":
        policy = policy.to(torch.bfloat16)
    learner = Learner(policy, tokenizer, task, cfg, hooks=hooks, rollout_engine=rollout_engine)
    return learner, learner.make_optimizer(), cfg


class FixedLengthEngine:
    """A rollout engine (Learner's rollout_engine): rollout.sampler with EOS forbidden before
    max_new_tokens, so every completion has exactly that length."""

    def __init__(self, sampler: str):
        from rlx.rollout import sampler_fn

        self.sample = sampler_fn(sampler)

    def generate(self, policy, tokenizer, texts, n, max_new_tokens, temperature, top_k, top_p, **options):
        return self.sample(policy, tokenizer, texts, n, max_new_tokens, temperature, top_k, top_p,
                           min_new_tokens=max_new_tokens, **options)


def workload(model: str = "1m", prompts: int = 16, group: int = 8, tokens: int = 32, extra=()) -> list[str]:
    return ["algorithm=grpo", f"model=qwen2_{model}", f"task.prompts_per_step={prompts}",
            f"algorithm.group_size={group}", f"rollout.max_new_tokens={tokens}", "algorithm.ppo_epochs=1",
            "algorithm.num_minibatches=1", "task.warmstart.steps=300", *extra]


# ------------------------------------------------------------------------------ profile
def profile(iterations: int, warmup: int, cache_dir: str, overrides: list[str]) -> dict:
    """Median seconds per stage of one iteration with every monitor on: the learner's collect and
    train_on as a run calls them (backward and optimizer timed through StepHooks and the
    optimizer's step hooks; generation, reference forward, update and monitor from the learner's
    own time/* metrics), the alternatives the defaults avoid measured beside them."""
    from lightning.pytorch.loggers import MLFlowLogger

    from rlx.learner import StepHooks, batched_token_stats
    from rlx.rollout import generate_rollouts

    watch = Stopwatch()
    hooks = StepHooks(backward=watch.wrap("backward", lambda loss: loss.backward()))
    learner, optimizer, cfg = build_learner(workload(extra=["monitor.kl_ref=true", "monitor.entropy_dynamics=true",
                                                            "precision.diagnostics=false", *overrides]),
                                            True, cache_dir, hooks=hooks)
    assert learner.fused_old_logprobs(), "the profile times the default single-step path (fused old log-probs)"
    watch.time_optimizer(optimizer)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        logger = MLFlowLogger(experiment_name="profile", tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        for it in range(warmup + iterations):
            watch.reset()
            # not part of the iteration: HF generate on the same prompts (the sampler the default avoids)
            texts = [learner.sampler.format_prompt(p.text) for p in learner.prompts_for(it)]
            with watch.stage("x_hf_generate"):
                generate_rollouts(learner.policy, learner.sampler.tokenizer, texts, cfg.algorithm.group_size,
                                  cfg.rollout.max_new_tokens, cfg.rollout.temperature)
            start = time.perf_counter()
            with watch.stage("collect_total"):  # prompts, generation, reward, advantages, reference forward
                rollout, metrics = learner.collect(it)
            watch.seconds["generation"] = metrics["time/rollout_s"]
            watch.seconds["reference_forward"] = metrics["time/logprob_s"]  # fused: only the reference pass
            watch.seconds["reward"] = (watch.seconds["collect_total"] - metrics["time/rollout_s"]
                                       - metrics["time/logprob_s"])  # + prompts, advantages, batch metrics
            pause = time.perf_counter()
            # not part of the iteration: the separate old-log-prob pass the fused path avoids
            with watch.stage("x_separate_logprobs_pass"):
                batched_token_stats(learner.policy, rollout, learner.settings, with_entropy=False)
            with watch.stage("x_separate_logprobs_and_entropy_pass"):
                batched_token_stats(learner.policy, rollout, learner.settings, with_entropy=True)
            paused = time.perf_counter() - pause
            with watch.stage("update_total"):
                metrics.update(learner.train_on(rollout, optimizer, it))  # fused: old log-probs from this forward
            with watch.stage("mlflow_log"):
                logger.log_metrics(metrics, step=it)
            watch.seconds["iteration"] = time.perf_counter() - start - paused
            watch.seconds["entropy_dynamics_monitor"] = metrics.get("time/monitor_s", 0.0)
            watch.seconds["train_forward_loss_entropy"] = (metrics["time/update_s"] - watch.seconds["backward"]
                                                           - watch.seconds["optimizer"])
            watch.seconds["tokens"] = float(rollout.attention_mask.sum())
            if it >= warmup:
                rows.append(watch.seconds)
    stages = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    stages["x_entropy_own_cost"] = stages["x_separate_logprobs_and_entropy_pass"] - stages["x_separate_logprobs_pass"]
    return stages


# ------------------------------------------------------------------------------ scaling
def executed_flops(params: int, seq_tokens: float, completion_tokens: float, shared_prompt_tokens: int,
                   all_prompt_tokens: int, epochs: int, share_prompts: bool, fused: bool) -> float:
    """Matrix-product FLOPs an iteration executes (2 per parameter per token forward, 4 backward):
    generation = 2 N (prompt tokens once per prompt + completion tokens);
    training = 6 N tokens per epoch, tokens = prompts once per prompt + completions with
    share_prompts, else every row's padded prompt and completion (seq_tokens);
    + 2 N tokens for the separate old-log-prob pass unless it is fused into the first step."""
    train_tokens = shared_prompt_tokens + completion_tokens if share_prompts else seq_tokens
    flops = 2 * params * (shared_prompt_tokens + completion_tokens) + 6 * params * train_tokens * epochs
    return flops + (0 if fused else 2 * params * train_tokens)


def iteration_seconds(overrides: list[str], iterations: int, warmup: int, cache_dir: str,
                      fixed_length: bool) -> dict:
    """Median seconds of rollout + update (monitors off) and the iteration's FLOP estimate."""
    overrides = overrides + ["monitor.kl_ref=false", "monitor.entropy_dynamics=false", "precision.diagnostics=false"]
    # fixed_length: every completion exactly max_new_tokens long (EOS cannot be sampled)
    engine = FixedLengthEngine(compose(overrides).rollout.sampler) if fixed_length else None
    learner, optimizer, cfg = build_learner(overrides, False, cache_dir, rollout_engine=engine)
    times, tokens = [], []
    for it in range(warmup + iterations):
        start = time.perf_counter()
        rollout, _ = learner.collect(it)
        advantages = rollout.extras["advantages"]
        rollout.extras["advantages"] = torch.randn(advantages.shape, generator=torch.Generator().manual_seed(it))
        learner.train_on(rollout, optimizer, it)
        if it >= warmup:
            times.append(time.perf_counter() - start)
            prompts = len(torch.unique(rollout.prompt_index))
            tokens.append((float(rollout.attention_mask.sum()), float(rollout.response_mask.sum()),
                           prompts * rollout.prompt_length, len(rollout.completions) * rollout.prompt_length))
    params = sum(p.numel() for p in learner.policy.get_decoder().layers.parameters())
    flops = statistics.median(executed_flops(params, *t, cfg.algorithm.ppo_epochs, learner.settings.share_prompts,
                                             learner.fused_old_logprobs()) for t in tokens)
    seq_tokens = statistics.median(t[0] for t in tokens)
    seconds = statistics.median(times)
    return {"s_per_iter": seconds, "params_M": params / 1e6, "tokens": seq_tokens, "gflop": flops / 1e9,
            "gflops_per_s": flops / 1e9 / seconds}


def scaling(iterations: int, warmup: int, cache_dir: str, smoke: bool) -> list[dict]:
    grid = ([("group", 4, workload(group=4, prompts=2, tokens=8))] if smoke else
            [("group", g, workload(group=g)) for g in (4, 8, 16)]
            + [("length", n, workload(tokens=n)) for n in (16, 32, 64, 128)]
            + [("model", m, workload(model=m)) for m in ("1m", "8m", "30m")])
    rows = []
    for dim, value, overrides in grid:
        result = iteration_seconds(overrides, iterations, warmup, cache_dir, fixed_length=True)
        rows.append({"dimension": dim, "value": value, **result})
        print(f"  {dim}={value}: {result['s_per_iter']:.3f} s/iteration, {result['gflops_per_s']:.1f} GFLOP/s",
              flush=True)
    return rows


# ------------------------------------------------------------------------------ peak
def matmul_peak(size: int, repeats: int) -> dict[str, float]:
    """Best GFLOP/s of a size^3 matrix product in fp32 and bf16 (2 size^3 FLOPs each)."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b  # warm-up
        best = min(_timed(lambda: a @ b) for _ in range(repeats))
        out[name] = 2 * size**3 / best / 1e9
    return out


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["profile", "scaling", "peak"])
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--cache-dir", default=str(ROOT / "outputs" / "cache"))
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--json")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for the profile, e.g. precision=bf16_true_logp_fp32_old_trainer")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    out = {"threads": torch.get_num_threads()}
    if a.smoke:
        a.iterations, a.warmup = 1, 0
    if a.only in (None, "peak"):
        out["peak"] = matmul_peak(256 if a.smoke else 2048, 2 if a.smoke else 10)
        print(f"matmul peak ({out['threads']} threads): fp32 {out['peak']['fp32']:.1f} GFLOP/s, "
              f"bf16 {out['peak']['bf16']:.1f} GFLOP/s", flush=True)
    if a.only in (None, "profile"):
        extra = ["task.prompts_per_step=2", "algorithm.group_size=4", "rollout.max_new_tokens=8",
                 "task.warmstart.steps=5"] if a.smoke else []
        out["profile"] = profile(a.iterations, a.warmup, a.cache_dir, extra + a.overrides)
        it = out["profile"]["iteration"]
        print("profile (median seconds per iteration, share of the iteration; x_: measured beside it, not in it):")
        for k, v in out["profile"].items():
            if k != "tokens":
                print(f"  {k:28s} {v:8.4f}  {100 * v / it:5.1f}%")
    if a.only in (None, "scaling"):
        print("scaling (rollout + update, fixed-length completions, random init):")
        out["scaling"] = scaling(a.iterations, a.warmup, a.cache_dir, a.smoke)
        first = {}
        for r in out["scaling"]:  # time ratio over size ratio against the dimension's first point: 1 = linear
            size = r["params_M"] if r["dimension"] == "model" else r["value"]
            base = first.setdefault(r["dimension"], (r["s_per_iter"], size))
            r["time_ratio"] = r["s_per_iter"] / base[0]
            r["time_per_size_ratio"] = r["time_ratio"] / (size / base[1])
        peak = out.get("peak", {}).get("fp32")
        print("| dimension | value | s/iteration | time ratio | time ratio / size ratio | GFLOP/iteration | GFLOP/s "
              "| % of fp32 matmul peak |")
        print("|---|---|---|---|---|---|---|---|")
        for r in out["scaling"]:
            share = f"{100 * r['gflops_per_s'] / peak:.1f}" if peak else "-"
            print(f"| {r['dimension']} | {r['value']} | {r['s_per_iter']:.3f} | {r['time_ratio']:.2f} | "
                  f"{r['time_per_size_ratio']:.2f} | "
                  f"{r['gflop']:.2f} | {r['gflops_per_s']:.1f} | {share} |")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
