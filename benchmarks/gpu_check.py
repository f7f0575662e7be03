"""One prepared GPU check: is rlx correct on the accelerator, and how fast is it there?

    python benchmarks/gpu_check.py                      # on a CUDA machine (at most ~8 minutes)
    python benchmarks/gpu_check.py --cpu                # the same code paths at tiny sizes (the CI test)
    python benchmarks/gpu_check.py --out DIR            # where gpu_check.json / gpu_check.md go

Prints one table (name | status | numbers) and writes it as JSON and markdown to --out
(default outputs/gpu_check/). The exit status is 1 when a correctness row fails; rows not started
after --budget-s are skipped, and at --hard-limit-s the table so far is written (exit status 3).

Correctness (the real run path: rlx.train.train -> rlx.run.run_rl, Lightning Trainer, checkpoints;
MLflow off with logger.enabled=false, so mlflow need not be installed):
  sampler       rlx's KV-cache sampler and HF generate on the device against fp32 first-token
                probabilities computed on the CPU: the probability each backend reports for the
                token it sampled, and the sampled first-token frequencies (within 5 sigma).
  train/*       GRPO and REPO-R, 2 iterations each, trainer=gpu in bf16-true, bf16-mixed and fp16
                (16-mixed): the precision plugin Lightning really used, the weights' dtype, every
                metric finite, no skipped (non-finite) step, and each optimizer step applying
                min(norm rlx's clipping saw, max_norm); fp16 also: a GradScaler in use whose scale
                never backed off (so that clip saw the unscaled gradient).
  fsdp          trainer=fsdp trainer.devices=1 (Lightning FSDPStrategy, decoder layers wrapped).
  resume        2 iterations straight vs 1 iteration + resume=last to 2: the resumed run trains
                only iteration 1 and ends where the straight one does.
Throughput (a randomly initialised model with Qwen3-0.6B's architecture, built from a config
written out here, nothing downloaded; bf16 weights):
  rollout/*     generated tokens/s of rlx's sampler and of HF generate on one batch of fixed length.
  update        tokens/s of Learner.train_on (forward + backward + AdamW step over the batch).
  Model FLOP utilisation = achieved FLOP/s over the chip's dense bf16 peak (H100/H200: 989 TFLOP/s;
  --peak-tflops for another chip; on the CPU a measured bf16 matrix-product peak), counting
  2 N FLOPs per token to generate and 6 N per token to train (N = parameters, the tied
  embedding counted once, as the LM head's matrix product; attention scores left out).
  trl           TRL's GRPOTrainer beside rlx (benchmarks/trl_bench.py --smoke) when trl imports;
                otherwise the row says "trl absent".
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded, on any machine

import torch  # noqa: E402

# Qwen/Qwen3-0.6B's config.json (architecture only), written out so nothing is fetched.
QWEN3_0_6B = dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                  rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True, hidden_act="silu",
                  attention_bias=False)
# The same architecture at a size one CPU core runs in seconds (--cpu).
QWEN3_TINY = dict(QWEN3_0_6B, vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks


@dataclass
class Sizes:
    """Workload sizes of one mode (GPU or --cpu)."""

    prompts: int              # prompts per RL iteration (training rows)
    group: int                # samples per prompt
    new_tokens: int           # rollout.max_new_tokens
    warmstart_steps: int      # the tiny base policy's warm-start (trained once, on the CPU)
    eval_samples: int         # eval.samples_per_prompt
    first_token_samples: int  # samples per prompt in the sampler row
    arch: dict                # the throughput model's architecture
    bench_prompts: int        # throughput batch: prompts x group x tokens
    bench_group: int
    bench_tokens: int
    micro_batch: int


GPU_SIZES = Sizes(prompts=16, group=8, new_tokens=16, warmstart_steps=200, eval_samples=4,
                  first_token_samples=4000, arch=QWEN3_0_6B, bench_prompts=32, bench_group=8,
                  bench_tokens=128, micro_batch=16)
CPU_SIZES = Sizes(prompts=8, group=4, new_tokens=8, warmstart_steps=120, eval_samples=2,
                  first_token_samples=2000, arch=QWEN3_TINY, bench_prompts=4, bench_group=4,
                  bench_tokens=16, micro_batch=16)


@dataclass
class Row:
    """One line of the table: status ok | FAIL | skipped, a note (reason, what was checked), numbers."""

    name: str
    kind: str                 # correctness | throughput
    status: str = "ok"
    note: str = ""
    numbers: dict = field(default_factory=dict)
    seconds: float = 0.0


class CheckFailed(AssertionError):
    """A row's check did not hold (the row is FAIL with this message)."""


def require(condition: bool, message: str) -> None:
    """Raise CheckFailed(message) unless condition holds."""
    if not condition:
        raise CheckFailed(message)


@dataclass
class Context:
    """What every row needs: device, sizes, working directory and the time budget."""

    device: str
    sizes: Sizes
    work: Path
    deadline: float
    threads: int | None
    peak_tflops: float | None

    @property
    def cpu(self) -> bool:
        return self.device == "cpu"


# ----------------------------------------------------------------------------------- helpers
def compose(overrides: list[str]):
    """The config rlx-train composes from these overrides."""
    from rlx.build import compose as rlx_compose

    return rlx_compose(overrides)


def run_overrides(ctx: Context, name: str, *extra: str) -> list[str]:
    """rlx-train overrides of a short training run on this device, its files under work/<name>."""
    s = ctx.sizes
    trainer = "cpu" if ctx.cpu else "gpu"
    return [
        f"trainer={trainer}", "trainer.max_steps=2", f"task.prompts_per_step={s.prompts}",
        f"algorithm.group_size={s.group}", f"rollout.max_new_tokens={s.new_tokens}",
        f"task.warmstart.steps={s.warmstart_steps}", "task.warmstart.batch_size=64",
        f"eval.samples_per_prompt={s.eval_samples}", f"eval.k=[1,{s.eval_samples}]", "eval_every=0",
        "checkpoint.every=1", f"checkpoint.dir={ctx.work / name / 'checkpoints'}", f"cache_dir={ctx.work / 'cache'}",
        "logger.enabled=false", f"run_name=gpu-check-{name}",
        *([f"trainer.num_threads={ctx.threads}"] if ctx.threads else []), *extra,
    ]


def importable(name: str) -> bool:
    """Whether `name` can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def reset_peak_memory(device: str) -> None:
    """Start a new peak-memory window (CUDA only; RSS has no reset)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: str) -> float:
    """Peak GPU memory allocated since the last reset (CUDA), else this process's peak RSS."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so wall-clock times are the work's."""
    if device == "cuda":
        torch.cuda.synchronize()


def finite_metrics(metrics: dict) -> list[str]:
    """Names of the metrics that are not finite (nan entries of undefined ratios excepted)."""
    allowed_nan = ("clip_flip_lowering_frac",)  # nan by definition when no clip decision flipped
    return [k for k, v in metrics.items() if not math.isfinite(v) and not k.endswith(allowed_nan)]


def gradient_norm(params) -> float:
    """The L2 norm of the gradients of `params` (fp32)."""
    norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0


class RunProbe:
    """A Lightning callback recording what a run really used: the precision plugin and its
    GradScaler (scale before and after), the policy's weight dtype, the iterations it trained,
    each iteration's metrics, and per optimizer step the norm rlx's clipping saw next to the
    norm of the (unscaled) gradient the optimizer is about to apply."""

    def __new__(cls):
        import lightning as L

        class _Probe(L.Callback):
            def __init__(self):
                self.plugin, self.scaler, self.scales, self.weight_dtype = None, None, [], None
                self.epochs, self.metrics, self.strategy = [], [], None
                self.clipped_norms, self.applied_norms = [], []

            def on_train_start(self, trainer, pl_module):
                self.plugin = trainer.precision_plugin
                self.strategy = type(trainer.strategy).__name__
                self.scaler = getattr(self.plugin, "scaler", None)
                self.weight_dtype = next(pl_module.policy.parameters()).dtype
                self._record_scale()
                hooks = pl_module.learner.update.hooks  # observe the clipping rlx does (the call itself unchanged)
                clip = hooks.clip_grad_norm

                def observed_clip(params, max_norm):
                    norm = clip(params, max_norm)
                    self.clipped_norms.append((float(norm), float(max_norm)))
                    return norm
                hooks.clip_grad_norm = observed_clip

            def on_before_optimizer_step(self, trainer, pl_module, optimizer):
                # after the precision plugin's unscale_, before the (scaler's) optimizer step
                self.applied_norms.append(gradient_norm(pl_module.policy.parameters()))

            def on_train_epoch_end(self, trainer, pl_module):
                self.epochs.append(trainer.current_epoch)
                self.metrics.append(dict(pl_module.last_metrics))
                self._record_scale()

            def _record_scale(self):
                if self.scaler is not None and self.scaler.is_enabled():
                    self.scales.append(float(self.scaler.get_scale()))

        return _Probe()


def train_run(ctx: Context, name: str, *overrides: str):
    """rlx.train.train on the composed overrides with a RunProbe; (final metrics, probe, seconds)."""
    from rlx.train import train

    probe = RunProbe()
    cfg = compose(run_overrides(ctx, name, *overrides))
    start = time.perf_counter()
    final = train(cfg, callbacks=[probe])
    synchronize(ctx.device)
    return final, probe, time.perf_counter() - start


def check_clipping(probe) -> float:
    """Each step's applied gradient norm is min(norm rlx clipped, max_norm): the clip saw the
    true gradient (a loss-scaled one would be clipped ~scale x too hard). Returns the largest
    relative mismatch."""
    require(len(probe.applied_norms) == len(probe.clipped_norms) > 0,
            f"{len(probe.clipped_norms)} clip calls vs {len(probe.applied_norms)} optimizer steps")
    worst = 0.0
    for (seen, max_norm), applied in zip(probe.clipped_norms, probe.applied_norms):
        expected = min(seen, max_norm)
        mismatch = abs(applied - expected) / max(expected, 1e-8)
        require(mismatch < 2e-2, f"the clip saw a gradient norm of {seen:.3g} but the optimizer applied "
                f"{applied:.3g} (expected {expected:.3g}): gradients clipped while still multiplied by the loss scale")
        worst = max(worst, mismatch)
    return worst


def check_iterations(probe, expected_epochs: list[int]) -> None:
    """The run trained exactly these iterations, each with finite metrics and no skipped step."""
    require(probe.epochs == expected_epochs, f"trained iterations {probe.epochs}, expected {expected_epochs}")
    for epoch, metrics in zip(probe.epochs, probe.metrics):
        bad = finite_metrics(metrics)
        require(not bad, f"iteration {epoch}: non-finite {bad[:5]}")
        require(metrics["train/nonfinite_skips"] == 0, f"iteration {epoch}: {metrics['train/nonfinite_skips']:.0f} "
                "optimizer steps skipped as non-finite")
        require(metrics["train/optimizer_steps"] > 0, f"iteration {epoch}: no optimizer step")


# ----------------------------------------------------------------------------------- correctness rows
EXPECTED_PLUGIN = {  # trainer_precision -> (Lightning plugin class, plugin.precision, weight dtype, scaler)
    "bf16-true": ("HalfPrecision", "bf16-true", torch.bfloat16, False),
    "bf16-mixed": ("MixedPrecision", "bf16-mixed", torch.float32, False),
    "16-mixed": ("MixedPrecision", "16-mixed", torch.float32, True),
}


def preset_for(trainer_precision: str) -> str:
    """The conf/precision preset that trains in `trainer_precision` with fp32 log-probs recomputed
    by the trainer (the recommended cell; e.g. bf16-true -> the bf16 weights, fp32 log-probs one),
    found by its contents so a renamed preset is still found."""
    from omegaconf import OmegaConf

    from rlx.config import CONF_DIR

    def rank(path: Path) -> tuple:
        c = OmegaConf.load(path)
        return (c.get("logprob_dtype") != "float32", c.get("old_logprobs") != "trainer", len(path.stem))

    found = [p for p in sorted((CONF_DIR / "precision").glob("*.yaml"))
             if OmegaConf.load(p).get("trainer_precision") == trainer_precision]
    require(bool(found), f"no conf/precision preset with trainer_precision={trainer_precision}")
    return min(found, key=rank).stem


def training_row(ctx: Context, algorithm: str, trainer_precision: str) -> dict:
    """Two iterations of `algorithm` through rlx-train's path in one precision; the plugin, dtype,
    scaler and finiteness checks (module docstring). Returns the row's numbers."""
    preset = preset_for(trainer_precision)
    reset_peak_memory(ctx.device)
    final, probe, seconds = train_run(ctx, f"{algorithm}-{preset}", f"algorithm={algorithm}", f"precision={preset}")
    plugin_name, plugin_precision, dtype, wants_scaler = EXPECTED_PLUGIN[trainer_precision]
    used = f"{type(probe.plugin).__name__}({getattr(probe.plugin, 'precision', '?')})"
    require(type(probe.plugin).__name__ == plugin_name and probe.plugin.precision == plugin_precision,
            f"precision plugin {used}, expected {plugin_name}({plugin_precision})")
    require(probe.weight_dtype == dtype, f"policy weights in {probe.weight_dtype}, expected {dtype}")
    check_iterations(probe, [0, 1])
    require(any(m["train/advantage_abs_mean"] > 0 for m in probe.metrics),
            "every advantage was 0 (no reward varied within a group): nothing was trained; warm-start longer")
    require(max(norm for norm, _ in probe.clipped_norms) > 0, "every gradient was 0")
    if wants_scaler:
        require(probe.scaler is not None and probe.scaler.is_enabled(), "no enabled GradScaler in the fp16 plugin")
        require(len(probe.scales) == 3 and probe.scales[-1] == probe.scales[0],
                f"the loss scale backed off (a non-finite scaled gradient): {probe.scales}")
    else:
        require(probe.scaler is None, f"a GradScaler in {used}")
    numbers = {"preset": preset, "s_per_iteration": seconds / 2, "steps": len(probe.applied_norms),
               "reward_mean": statistics.mean(m["train/reward_mean"] for m in probe.metrics),
               "entropy": final["train/entropy"], "grad_norm": final["train/grad_norm"],
               "clip_mismatch": check_clipping(probe), "peak_mem_gib": peak_memory_gib(ctx.device)}
    if wants_scaler:
        numbers["loss_scale"] = probe.scales[-1]
    return numbers


def fsdp_row(ctx: Context) -> dict:
    """trainer=fsdp on one device: Lightning's FSDPStrategy wraps the decoder layers, 2 iterations."""
    import torch.distributed as dist

    reset_peak_memory(ctx.device)
    try:
        final, probe, seconds = train_run(ctx, "fsdp", "trainer=fsdp", "trainer.devices=1", "algorithm=grpo",
                                          "precision=bf16_mixed", f"trainer.micro_batch_size={ctx.sizes.micro_batch}")
    finally:
        if dist.is_available() and dist.is_initialized():  # later rows run in one process
            dist.destroy_process_group()
    require(probe.strategy == "FSDPStrategy", f"strategy {probe.strategy}, expected FSDPStrategy")
    check_iterations(probe, [0, 1])
    return {"s_per_iteration": seconds / 2, "entropy": final["train/entropy"], "grad_norm": final["train/grad_norm"],
            "peak_mem_gib": peak_memory_gib(ctx.device)}


def resume_row(ctx: Context) -> dict:
    """Checkpoint and resume=last on the device: 2 iterations straight, then 1 iteration and a
    resumed run to 2 in another checkpoint directory; the resumed run trains iteration 1 only and
    its last metrics match the straight run's (fp32, so only kernel non-determinism can differ)."""
    common = ("algorithm=repo_r", "precision=fp32")
    straight, _probe, _s = train_run(ctx, "resume-straight", *common)
    _first, first_probe, _s = train_run(ctx, "resume", *common, "trainer.max_steps=1")
    check_iterations(first_probe, [0])
    last = ctx.work / "resume" / "checkpoints"
    require(any(last.glob("*/last.ckpt")), f"no last.ckpt under {last}")
    resumed, probe, _s = train_run(ctx, "resume", *common, "resume=last")
    check_iterations(probe, [1])
    keys = ("train/entropy", "train/reward_mean", "train/grad_norm")
    diff = max(abs(resumed[k] - straight[k]) / max(abs(straight[k]), 1e-6) for k in keys)
    require(diff < 5e-3, f"resumed run ends {diff:.2e} (relative) away from the straight run")
    return {"max_rel_diff_vs_straight": diff, "entropy": resumed["train/entropy"]}


def sampler_row(ctx: Context) -> dict:
    """First-token distribution of rlx's sampler and HF generate on the device (fp32) against
    fp32 probabilities computed on the CPU, for a fixed batch of prompts of different lengths."""
    from rlx.build import instantiate_task, task_identity
    from rlx.rollout import generate_rollouts, sample_rollouts
    from rlx.rollout.hf import encode_prompts
    from rlx.warmstart import base_policy

    cfg = compose(run_overrides(ctx, "sampler"))
    task = instantiate_task(cfg.task)
    model, tokenizer, _ = base_policy(task, task_identity(cfg.task), cfg.model, cfg.task.warmstart, cfg.cache_dir)
    texts = [p.text for p in task.train_prompts()[:3]] + ["T=5:"]  # lengths differ: left padding exercised
    temperature = float(cfg.rollout.temperature)
    model = model.float().eval()
    with torch.no_grad():  # one prompt at a time on the CPU: no padding in the reference
        reference = torch.stack([(model(input_ids=encode_prompts(tokenizer, [t])[0]).logits[0, -1] / temperature)
                                 .double().softmax(-1) for t in texts])
    device_model = model.to(ctx.device)
    n = ctx.sizes.first_token_samples
    tolerance = 5 * math.sqrt(0.25 / n)  # 5 sigma of a frequency estimated from n samples
    numbers = {"samples_per_prompt": n, "freq_tolerance": tolerance}
    for name, sample in (("rlx", sample_rollouts), ("hf", generate_rollouts)):
        torch.manual_seed(0)
        batch = sample(device_model, tokenizer, texts, n, max_new_tokens=1, temperature=temperature,
                       return_logprobs=True)
        tokens = batch.input_ids[:, batch.prompt_length].cpu()
        rows = batch.prompt_index.cpu()
        reported = batch.extras["sampler_logprobs"][:, 0].double().cpu().exp()
        prob_error = float((reported - reference[rows, tokens]).abs().max())
        freq = torch.zeros_like(reference)
        freq.index_put_((rows, tokens), torch.ones(len(tokens), dtype=freq.dtype), accumulate=True)
        freq_dev = float((freq / n - reference).abs().max())
        numbers[f"{name}_max_prob_error"], numbers[f"{name}_max_freq_dev"] = prob_error, freq_dev
        require(prob_error < 1e-3, f"{name}: sampled-token probability {prob_error:.2e} away from the CPU's")
        require(freq_dev < tolerance, f"{name}: first-token frequency {freq_dev:.4f} away from the CPU's "
                f"probability (tolerance {tolerance:.4f})")
    return numbers


# ----------------------------------------------------------------------------------- throughput rows
def filler_alphabet(size: int, exclude: str) -> str:
    """`size` distinct characters (none in `exclude`, no surrogates) to give a character
    tokenizer a real model's vocabulary size."""
    chars, code = [], 0x100
    while len(chars) < size:
        if not 0xD800 <= code <= 0xDFFF and chr(code) not in exclude:
            chars.append(chr(code))
        code += 1
    return "".join(chars)


def bench_model(ctx: Context, task):
    """(policy with ctx.sizes.arch's Qwen3 architecture, random init, bf16 weights on the device;
    a character tokenizer of the same vocabulary size that writes the task's prompts)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from rlx.models import SPECIAL_TOKENS, char_tokenizer

    arch = ctx.sizes.arch
    alphabet = task.alphabet()
    tokenizer = char_tokenizer(alphabet + filler_alphabet(arch["vocab_size"] - len(SPECIAL_TOKENS) - len(alphabet),
                                                          alphabet))
    config = Qwen3Config(**arch, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    with torch.device(ctx.device):
        model = Qwen3ForCausalLM(config)
    return model.to(torch.bfloat16), tokenizer


def peak_flops(ctx: Context) -> tuple[float, str]:
    """(dense bf16 FLOP/s the chip can do, where the figure comes from)."""
    if ctx.peak_tflops:
        return ctx.peak_tflops * 1e12, "--peak-tflops"
    if ctx.device == "cuda":
        name = torch.cuda.get_device_name()
        for chip, tflops in PEAK_BF16_TFLOPS.items():
            if chip in name:
                return tflops * 1e12, f"{chip} datasheet"
        raise CheckFailed(f"unknown chip {name!r}: pass --peak-tflops")
    a, b = torch.randn(512, 512, dtype=torch.bfloat16), torch.randn(512, 512, dtype=torch.bfloat16)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    return 2 * 512**3 / best, "measured 512^3 bf16 matmul"


def _timed(fn) -> float:
    """Seconds one call of fn takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class FixedLength:
    """A rollout engine (Learner's rollout_engine) whose completions are all max_new_tokens long:
    rlx's sampler (or HF generate) with EOS forbidden until then, so each timing does equal work."""

    def __init__(self, sampler):
        self.sample = sampler

    def generate(self, policy, tokenizer, texts, n, max_new_tokens, temperature, top_k, top_p, **options):
        return self.sample(policy, tokenizer, texts, n, max_new_tokens, temperature, top_k, top_p,
                           min_new_tokens=max_new_tokens, **options)


def bench_learner(ctx: Context):
    """(Learner over the Qwen3-architecture policy with AdamW, its optimizer, parameter count)."""
    from rlx.build import instantiate_task
    from rlx.learner import Learner
    from rlx.rollout import sample_rollouts

    s = ctx.sizes
    cfg = compose(run_overrides(ctx, "bench", "algorithm=grpo", f"precision={preset_for('bf16-true')}",
                                f"task.prompts_per_step={s.bench_prompts}", f"algorithm.group_size={s.bench_group}",
                                f"rollout.max_new_tokens={s.bench_tokens}", f"trainer.micro_batch_size={s.micro_batch}",
                                "monitor.kl_ref=false", "monitor.entropy_dynamics=false", "precision.diagnostics=false"))
    task = instantiate_task(cfg.task)
    policy, tokenizer = bench_model(ctx, task)
    learner = Learner(policy, tokenizer, task, cfg, rollout_engine=FixedLength(sample_rollouts))
    params = sum(p.numel() for p in policy.parameters())  # the tied embedding once: the LM head's matmul
    return learner, learner.make_optimizer(), params


def rollout_rows(ctx: Context, learner, params: int, peak: float) -> dict[str, dict]:
    """Generated tokens/s of rlx's sampler and of HF generate on the same fixed-length batch."""
    from rlx.rollout import generate_rollouts, sample_rollouts

    s = ctx.sizes
    texts = [learner.sampler.format_prompt(p.text) for p in learner.prompts_for(0)]
    results = {}
    for name, sample in (("rlx", sample_rollouts), ("hf_generate", generate_rollouts)):
        sample(learner.policy, learner.sampler.tokenizer, texts[:2], 2, 4, min_new_tokens=4)  # warm-up
        reset_peak_memory(ctx.device)
        synchronize(ctx.device)
        start = time.perf_counter()
        batch = sample(learner.policy, learner.sampler.tokenizer, texts, s.bench_group, s.bench_tokens,
                       min_new_tokens=s.bench_tokens)
        synchronize(ctx.device)
        seconds = time.perf_counter() - start
        generated = float(batch.response_mask.sum())
        computed = generated + len(texts) * batch.prompt_length  # useful work: each prompt prefilled once
        results[name] = {"tokens_per_s": generated / seconds, "seconds": seconds, "tokens": generated,
                         "mfu": 2 * params * computed / seconds / peak, "peak_mem_gib": peak_memory_gib(ctx.device)}
        require(generated == len(texts) * s.bench_group * s.bench_tokens, f"{name}: {generated:.0f} tokens generated")
    results["rlx"]["speedup_vs_hf"] = results["hf_generate"]["seconds"] / results["rlx"]["seconds"]
    return results


def update_row(ctx: Context, learner, optimizer, params: int, peak: float) -> dict:
    """Tokens/s of the update (Learner.train_on: forward, backward, AdamW step) on one rollout
    batch with random advantages, after one untimed warm-up update."""
    times, tokens = [], []
    for it in range(2):
        rollout, _metrics = learner.collect(it)
        shape = rollout.extras["advantages"].shape
        rollout.extras["advantages"] = torch.randn(shape, generator=torch.Generator().manual_seed(it))
        reset_peak_memory(ctx.device)
        synchronize(ctx.device)
        metrics = learner.train_on(rollout, optimizer, it)
        synchronize(ctx.device)
        require(not finite_metrics(metrics) and metrics["train/optimizer_steps"] > 0, "update not finite")
        times.append(metrics["time/update_s"])
        tokens.append(float(rollout.attention_mask.sum()))
    seconds, n_tokens = times[-1], tokens[-1]
    return {"tokens_per_s": n_tokens / seconds, "seconds": seconds, "tokens": n_tokens,
            "mfu": 6 * params * n_tokens / seconds / peak, "peak_mem_gib": peak_memory_gib(ctx.device)}


def trl_row(ctx: Context) -> dict:
    """rlx beside TRL's GRPOTrainer on benchmarks/trl_bench.py's smoke workload (its own processes)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "trl.json"
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "trl_bench.py"), "--smoke", "--cache-dir",
                               str(ctx.work / "trl-cache"), "--json", str(out)], cwd=ROOT, capture_output=True,
                              text=True, timeout=max(30.0, ctx.deadline - time.monotonic()))
        require(proc.returncode == 0, f"trl_bench failed: {proc.stderr.strip().splitlines()[-1:]}")
        rows = json.loads(out.read_text())["rows"]
    return {f"{r['side']}_tokens_per_s": r["tokens_per_s"] for r in rows} | \
        {f"{r['side']}_s_per_iteration": r["s_per_iter"] for r in rows}


# ----------------------------------------------------------------------------------- the table
def run_row(rows: list[Row], ctx: Context, name: str, kind: str, fn, *args) -> Row:
    """Run one check: ok with its numbers, FAIL with the reason, or skipped when the time budget is spent."""
    row = Row(name, kind, status="running")
    rows.append(row)
    if time.monotonic() > ctx.deadline:
        row.status, row.note = "skipped", "time budget spent (--budget-s)"
        return row
    start = time.perf_counter()
    try:
        row.numbers = fn(ctx, *args) or {}
        row.status = "ok"
    except CheckFailed as exc:
        row.status, row.note = "FAIL", str(exc)
    except Exception as exc:  # a crash is a failure of the row, not of the check
        row.status, row.note = "FAIL", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        traceback.print_exc()
    row.seconds = time.perf_counter() - start
    print(f"[gpu_check] {row.name}: {row.status} {row.note} ({row.seconds:.1f} s)", flush=True)
    return row


def skip(rows: list[Row], name: str, kind: str, reason: str) -> None:
    """Add a row that does not run, with the reason."""
    rows.append(Row(name, kind, "skipped", reason))


def format_number(value) -> str:
    """Three significant digits for floats (more for large ones), anything else as text."""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def markdown(rows: list[Row], header: str) -> str:
    """The table as markdown under a one-line header."""
    lines = [header, "", "| check | kind | status | numbers | note |", "|---|---|---|---|---|"]
    for r in rows:
        numbers = ", ".join(f"{k}={format_number(v)}" for k, v in r.numbers.items())
        lines.append(f"| {r.name} | {r.kind} | {r.status} | {numbers} | {r.note} |")
    return "\n".join(lines)


def environment(ctx: Context) -> dict:
    """Device, library versions and mode of this run (the JSON's environment)."""
    import lightning
    import transformers

    return {"device": torch.cuda.get_device_name() if ctx.device == "cuda" else "cpu", "torch": torch.__version__,
            "transformers": transformers.__version__, "lightning": lightning.__version__,
            "python": sys.version.split()[0], "mode": "cpu" if ctx.cpu else "gpu",
            "trl": "present" if importable("trl") else "absent",
            "mlflow": "present" if importable("mlflow") else "absent"}


# ----------------------------------------------------------------------------------- main
def correctness(rows: list[Row], ctx: Context) -> None:
    """The correctness rows, in order (module docstring)."""
    run_row(rows, ctx, "sampler: first-token distribution", "correctness", sampler_row)
    for algorithm in ("grpo", "repo_r"):
        for precision in ("bf16-true", "bf16-mixed", "16-mixed"):
            run_row(rows, ctx, f"train {algorithm} {precision}", "correctness", training_row, algorithm, precision)
    if ctx.cpu:
        skip(rows, "fsdp devices=1", "correctness", "skipped on cpu: Lightning's FSDP strategy requires a GPU accelerator")
    else:
        run_row(rows, ctx, "fsdp devices=1", "correctness", fsdp_row)
    run_row(rows, ctx, "checkpoint + resume=last", "correctness", resume_row)


def throughput(rows: list[Row], ctx: Context, with_trl: bool = True) -> None:
    """The throughput rows: the Qwen3-architecture model built once, then rollout, update, TRL."""
    if time.monotonic() > ctx.deadline:
        for name in ("rollout rlx sampler", "rollout hf generate", "update"):
            skip(rows, name, "throughput", "time budget spent (--budget-s)")
    else:
        state: dict = {}

        def setup(ctx):
            state["learner"], state["optimizer"], state["params"] = bench_learner(ctx)
            state["peak"], source = peak_flops(ctx)
            return {"params_M": state["params"] / 1e6, "peak_tflops": state["peak"] / 1e12, "peak_source": source}

        built = run_row(rows, ctx, f"model {'qwen3 tiny' if ctx.cpu else 'qwen3-0.6b'} (random init)", "throughput",
                        setup)
        if built.status == "ok":
            rollout = run_row(rows, ctx, "rollout (rlx sampler, hf generate)", "throughput",
                              lambda c: rollout_rows(c, state["learner"], state["params"], state["peak"]))
            if rollout.status == "ok":  # one row per sampler
                results = rollout.numbers
                rows.remove(rollout)
                for name in ("rlx", "hf_generate"):
                    rows.append(Row(f"rollout {name}", "throughput", numbers=results[name], seconds=rollout.seconds))
            run_row(rows, ctx, "update (fwd+bwd+AdamW)", "throughput",
                    lambda c: update_row(c, state["learner"], state["optimizer"], state["params"], state["peak"]))
            state.clear()
    if not importable("trl"):
        skip(rows, "trl GRPOTrainer", "throughput", "trl absent")
    elif not with_trl:
        skip(rows, "trl GRPOTrainer", "throughput", "left out (--skip-trl)")
    elif not ctx.cpu:
        skip(rows, "trl GRPOTrainer", "throughput", "benchmarks/trl_bench.py runs TRL on the CPU only")
    else:
        run_row(rows, ctx, "trl GRPOTrainer (trl_bench --smoke)", "throughput", trl_row)


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (the same code paths; CI)")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "gpu_check",
                   help="directory for gpu_check.json and gpu_check.md")
    p.add_argument("--work", type=Path, default=None, help="runs' checkpoints and warm-start cache (default: a temp dir)")
    p.add_argument("--budget-s", type=float, default=400.0, help="rows not started by then are skipped")
    p.add_argument("--hard-limit-s", type=float, default=450.0,
                   help="then the table so far is written and the check exits (status 3)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (--cpu: 1)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the chip's dense bf16 peak, for the MFU")
    p.add_argument("--skip-trl", action="store_true", help="leave out the TRL row")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Run every row, write the table; the exit status (0 ok, 1 correctness failed, 2 no GPU, 3 hard limit)."""
    args = parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; run with --cpu for the CPU mode", file=sys.stderr)
        return 2
    threads = args.threads or (1 if args.cpu else None)
    if threads:
        torch.set_num_threads(threads)
    started = time.monotonic()
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu_check-")))
        ctx = Context(device="cpu" if args.cpu else "cuda", sizes=CPU_SIZES if args.cpu else GPU_SIZES, work=work,
                      deadline=started + args.budget_s, threads=threads, peak_tflops=args.peak_tflops)
        watchdog = threading.Timer(args.hard_limit_s, hard_stop, (rows, ctx, args.out, started))
        watchdog.daemon = True
        watchdog.start()
        correctness(rows, ctx)
        throughput(rows, ctx, with_trl=not args.skip_trl)
        watchdog.cancel()
    return write_table(rows, ctx, args.out, started)


def write_table(rows: list[Row], ctx: Context, out: Path, started: float) -> int:
    """Print the table, write it to out/gpu_check.{md,json}; 1 when a correctness row failed, else 0."""
    env = environment(ctx)
    header = (f"rlx GPU check ({env['mode']} mode) on {env['device']}: torch {env['torch']}, transformers "
              f"{env['transformers']}, lightning {env['lightning']}; {time.monotonic() - started:.0f} s")
    table = markdown(rows, header)
    print(table, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.md").write_text(table + "\n")
    (out / "gpu_check.json").write_text(json.dumps({"environment": env, "rows": [asdict(r) for r in rows]}, indent=2))
    failed = [r.name for r in rows if r.kind == "correctness" and r.status == "FAIL"]
    if failed:
        print(f"gpu_check: correctness failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def hard_stop(rows: list[Row], ctx: Context, out: Path, started: float) -> None:
    """At --hard-limit-s (a row hangs, e.g. a collective that never returns): the row still running
    fails, the table so far is written, and the process exits with status 3."""
    for row in rows:
        if row.status == "running":
            row.status, row.note = "FAIL", "still running at --hard-limit-s"
    write_table(rows, ctx, out, started)
    os._exit(3)


if __name__ == "__main__":
    sys.exit(main())
