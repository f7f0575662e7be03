"""The RL LightningModule: one `training_step` is one RL iteration.

rollout (G samples per prompt) -> rewards -> advantages -> old log-probs and exact entropy
(one no-grad forward) -> ppo_epochs x minibatches of updates (entropy regulator applied to the
advantage of every minibatch) -> entropy dynamics monitor -> controller update -> metrics.
"""

from __future__ import annotations

import copy
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig

from rlx import objectives as obj
from rlx.control import AdaptiveEntropyCoefController, ClipHighController, ZetaController
from rlx.metrics import distinct_correct, pass_at_k, pearson
from rlx.models import is_lora_model, prompt_formatter
from rlx.precision import clip_flips, dtype_of, logp_mismatch, logprobs_in_dtype
from rlx.rollout import RolloutBatch, sampler_fn
from rlx.rollout.batch import length_sorted_micro_batches
from rlx.rollout.sampler import cache_keyword
from rlx.rollout.multiturn import run_episodes
from rlx.tasks.base import RewardStats, is_multi_turn, safe_rewards
from rlx.tracking import flush_metrics

SUCCESS_THRESHOLD = 1.0 - 1e-6  # a sample counts as correct for pass@k when its reward reaches 1


@dataclass
class TokenStats:
    """Per-token fp32 log-probs of the sampled tokens and (optionally) full-distribution entropy."""

    logprobs: torch.Tensor
    entropy: torch.Tensor | None


def shared_prompt_rows(batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(one row per distinct prompt, each row's index into those) when every row of a prompt
    group carries identical prompt tokens; None otherwise (nothing to share)."""
    prompt_ids = batch.input_ids[:, :batch.prompt_length]
    unique, inverse = torch.unique(batch.prompt_index, return_inverse=True)
    if len(unique) == len(inverse):
        return None
    first = torch.empty(len(unique), dtype=torch.long).scatter_(0, inverse, torch.arange(len(inverse)))  # any row of each
    if not torch.equal(prompt_ids[first][inverse], prompt_ids):
        return None
    return first, inverse


def completion_outputs(net, batch: RolloutBatch, share_prompts: bool, output: str, **extra) -> torch.Tensor:
    """net's `output` ("logits" of the model, or "last_hidden_state" of its decoder) at the T
    positions that predict the T completion tokens: [B, T, ...].

    share_prompts: the prompt goes through the network once per distinct prompt (not once per
    sample: a group of G samples shares it); its KV cache is gathered to every row of the group,
    then the completions run on top of it. Gradients flow through the gathered cache into the
    prompt's activations, so values and gradients equal those of the full forward pass.
    """
    length = batch.responses.shape[1]
    positions = batch.position_ids
    shared = shared_prompt_rows(batch) if share_prompts else None
    if shared is None:
        keep = {"logits_to_keep": length + 1} if output == "logits" else {}
        out = net(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=positions,
                  use_cache=False, **keep, **extra)
        return getattr(out, output)[:, -(length + 1):-1]
    first, inverse = shared
    p = batch.prompt_length
    prefix = net(input_ids=batch.input_ids[first, :p], attention_mask=batch.attention_mask[first, :p],
                 position_ids=positions[first, :p], use_cache=True,
                 **({"logits_to_keep": 1} if output == "logits" else {}), **extra)
    head = getattr(prefix, output)[:, -1][inverse, None]  # predicts the first completion token
    if length == 1:
        return head
    cache = prefix.past_key_values
    cache.batch_select_indices(inverse)  # a differentiable gather: row i gets its prompt's keys/values
    end = p + length - 1  # the last completion token predicts nothing
    rest = net(input_ids=batch.input_ids[:, p:end], attention_mask=batch.attention_mask[:, :end],
               position_ids=positions[:, p:end], use_cache=True, **{cache_keyword(net): cache}, **extra)
    return torch.cat([head, getattr(rest, output)], dim=1)


def activation_checkpointing(model) -> bool:
    """Whether the model recomputes activations in backward (HF renamed the attribute in 5.x)."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name) or hasattr(model, name):
            return bool(getattr(model, name))
    return False


def response_token_stats(model, batch: RolloutBatch, temperature: float, chunk_size: int, with_entropy: bool,
                         logprob_dtype: torch.dtype = torch.float32, upcast_head: bool = False,
                         share_prompts: bool = False) -> TokenStats:
    """log pi(y_t | x, y_<t) for the completion tokens (and H(pi(.|x, y_<t)) if asked).

    Only the T positions that predict completion tokens go through the LM head, and logits are
    divided by the sampling temperature so the log-probs are those of the sampling policy.
    upcast_head computes the LM head in fp32 from the (e.g. bf16) hidden states. Log-probs are
    formed in `logprob_dtype` (fp32 by default; bf16 keeps Theorem 3's rounding on purpose);
    the entropy is always exact fp32, whatever the model's dtype. share_prompts: see
    completion_outputs (each prompt computed once per group).
    """
    responses = batch.responses
    share = share_prompts and not activation_checkpointing(model)  # HF turns the KV cache off under checkpointing
    if upcast_head:
        hidden = completion_outputs(model.get_decoder(), batch, share, "last_hidden_state")
        head = model.get_output_embeddings()
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            bias = None if head.bias is None else head.bias.float()
            logits = torch.nn.functional.linear(hidden.float(), head.weight.float(), bias)
    else:
        logits = completion_outputs(model, batch, share, "logits")
    if temperature != 1.0:
        logits = logits / temperature
    if logprob_dtype != torch.float32:
        logprobs = logprobs_in_dtype(logits, responses, logprob_dtype)
        entropy = obj.entropy_from_logits(logits, chunk_size=chunk_size) if with_entropy else None
        return TokenStats(logprobs, entropy)
    if with_entropy:
        logprobs, entropy = obj.logprobs_and_entropy(logits, responses, chunk_size=chunk_size)
        return TokenStats(logprobs, entropy)
    return TokenStats(obj.logprobs_from_logits(logits, responses, chunk_size=chunk_size), None)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    """sum(values * mask) / max(1, sum(mask)) as a Python float."""
    return float((values * mask).sum() / mask.sum().clamp(min=1))


def numpy_rng_state() -> tuple:
    """numpy's global RNG state with its key array as a list, so `torch.load(weights_only=True)`
    (Lightning's default) can read the checkpoint."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return name, keys.tolist(), int(pos), int(has_gauss), float(cached)


def build_controllers(reg: DictConfig) -> dict:
    """The stateful controllers the algorithm's entropy regulator needs (none for plain objectives)."""
    if reg.name in ("repo_r", "repo_d"):
        return {"zeta": ZetaController(zeta_init=reg.zeta_init, zeta_min=reg.zeta_min, zeta_max=reg.zeta_max,
                                       target_ratio=reg.target_ratio)}
    if reg.name == "adapo":
        return {"eps_high": ClipHighController(eps_init=reg.eps_init, eps_min=reg.eps_min, eps_max=reg.eps_max,
                                               factor=reg.factor, mode=reg.mode, step=reg.step,
                                               dead_band=reg.dead_band, target_ratio=reg.target_ratio)}
    if reg.name == "adaptive_entropy":
        return {"entropy_coef": AdaptiveEntropyCoefController(
            coef_init=reg.coef_init, delta=reg.delta, coef_min=reg.coef_min, coef_max=reg.coef_max,
            target_ratio=reg.target_ratio)}
    return {}


class RLModule(L.LightningModule):
    """Owns the policy, the frozen reference policy, the objective and the controllers."""

    def __init__(self, policy, tokenizer, task, cfg: DictConfig, reference=None, rollout_engine=None):
        super().__init__()
        self.automatic_optimization = False
        self.policy = policy.train()  # from_pretrained returns eval mode
        self.reference = reference
        needs_reference = cfg.algorithm.kl_loss_coef > 0 or cfg.monitor.kl_ref
        # With LoRA the reference policy is the base model with the adapters disabled: no second copy.
        self.reference_is_base = reference is None and needs_reference and is_lora_model(policy)
        if self.reference is None and needs_reference and not self.reference_is_base:
            self.reference = copy.deepcopy(policy)
        if self.reference is not None:
            self.reference.requires_grad_(False).eval()
        self.tokenizer = tokenizer
        self.task = task
        self.cfg = cfg
        self.alg = cfg.algorithm
        self.controllers = build_controllers(self.alg.regulator)
        self.entropy0: float | None = None
        self.entropy_cumulative = 0.0
        self.dynamics: list[tuple[float, float]] = []  # (predicted, measured) entropy change per iteration
        self.nonfinite_streak = 0
        self.mlflow_run_id: str | None = None
        self.last_metrics: dict[str, float] = {}
        self._sampler_copy: list | None = None
        self._train_prompts = task.train_prompts()
        self.format_prompt = prompt_formatter(tokenizer, cfg.get("model"))  # chat template when there is one
        self.rollout_engine = rollout_engine  # None: Hugging Face generate on the policy

    # ----------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        o = self.cfg.optim
        trainable = [p for p in self.policy.parameters() if p.requires_grad]  # only the adapters under LoRA
        return torch.optim.AdamW(trainable, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas))

    @property
    def iteration(self) -> int:
        return self.current_epoch

    def sample_prompts(self, iteration: int):
        """task.prompts_per_step prompts without replacement, seeded by (seed, iteration) so a
        resumed run sees the same prompts as an uninterrupted one."""
        rng = random.Random(self.cfg.seed * 1_000_003 + iteration)
        k = min(self.cfg.task.prompts_per_step, len(self._train_prompts))
        chosen = rng.sample(self._train_prompts, k)
        while len(chosen) < self.cfg.task.prompts_per_step:  # more prompts per step than the task has
            chosen.append(rng.choice(self._train_prompts))
        return chosen

    def training_step(self, batch, batch_idx):
        it = self.iteration
        metrics: dict[str, float] = {}
        t_start = time.perf_counter()
        if self.cfg.eval_every and it % self.cfg.eval_every == 0 or it == 0:
            metrics.update(self.evaluate())
        rollout, advantages, metrics_r = self.collect_rollout(it)
        metrics.update(metrics_r)
        metrics.update(self.update_policy(rollout, advantages))
        metrics["time/iteration_s"] = time.perf_counter() - t_start
        metrics = self.reduce_metrics(metrics)
        self.last_metrics = metrics
        self.logger_log(metrics, step=it)
        if it == self.trainer.max_epochs - 1:
            self.logger_log(self.reduce_metrics(self.evaluate()), step=it + 1)

    # ----------------------------------------------------------------- rollout
    @torch.no_grad()
    def collect_rollout(self, iteration: int):
        """Generate, score, compute advantages and the per-token statistics before the update."""
        alg, ro = self.alg, self.cfg.rollout
        prompts = self.sample_prompts(iteration)
        world, rank = self.world()
        if world > 1:  # each rank generates its share of the prompts, with its own seeded stream
            if len(prompts) % world:
                raise ValueError(f"task.prompts_per_step={len(prompts)} must be divisible by the number of "
                                 f"ranks ({world}) so every rank holds whole groups")
            prompts = prompts[rank::world]
            torch.manual_seed((self.cfg.seed * 1_000_003 + iteration) * 1009 + rank)
        t0 = time.perf_counter()
        prec = self.cfg.precision
        rollout = self.generate(prompts, alg.group_size,
                                return_logprobs=bool(prec.diagnostics) or prec.old_logprobs == "sampler")
        t_rollout = time.perf_counter() - t0
        stats = RewardStats()
        samples = [prompts[i] for i in rollout.prompt_index.tolist()]
        rewards = torch.tensor(self.score(samples, rollout, stats), dtype=torch.float32)
        options = {k: v for k, v in {"scale": alg.adv_scale}.items() if k in obj.advantage_keys(alg.advantage)}
        advantages = obj.compute_advantages(alg.advantage, rewards, alg.group_size, **options)

        t0 = time.perf_counter()
        use_sampler = prec.old_logprobs == "sampler"
        if use_sampler and "sampler_logprobs" not in rollout.extras:
            raise ValueError("precision.old_logprobs='sampler': this rollout backend returns no sampler log-probs")
        if self.fused_old_logprobs():  # filled by the update's forward pass (see fused_old_logprobs)
            zeros = torch.zeros(rollout.response_mask.shape, dtype=torch.float32, device=rollout.response_mask.device)
            rollout.extras["old_logprobs"], rollout.extras["entropy"] = zeros, zeros.clone()
            rollout.extras["trainer_logprobs"] = rollout.extras["old_logprobs"]
        else:
            before = self.batched_token_stats(self.policy, rollout, with_entropy=True)
            rollout.extras["trainer_logprobs"] = before.logprobs
            rollout.extras["old_logprobs"] = rollout.extras["sampler_logprobs"] if use_sampler else before.logprobs
            rollout.extras["entropy"] = before.entropy
        if self.run_precision_diagnostics():
            rows = torch.arange(min(prec.diagnostics_sample, len(rollout.completions)))
            rollout.extras["diag_rows"] = rows
            rollout.extras["old_logprobs_fp32"] = self.fp32_logprobs(rollout.select(rows))
        if self.reference is not None or self.reference_is_base:
            rollout.extras["ref_logprobs"] = self.reference_logprobs(rollout)
        t_logprob = time.perf_counter() - t0

        mask = rollout.response_mask
        n_tokens = float(self.all_reduce(mask.sum().double()))  # over every rank's shard
        metrics = {
            "train/reward_mean": float(rewards.mean()),
            "train/reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
            "train/reward_errors": float(stats.errors),
            "train/advantage_abs_mean": float(advantages.abs().mean()),
            "train/response_length": n_tokens / (len(rewards) * world),
            "train/truncated_frac": float(rollout.truncated.float().mean()),
            "time/rollout_s": t_rollout,
            "time/logprob_s": t_logprob,
            "perf/tokens_per_s": n_tokens / max(t_rollout, 1e-9),
        }
        if not self.fused_old_logprobs():
            metrics.update(self.rollout_policy_metrics(rollout))
        metrics.update({f"train/{k}": v for k, v in rollout.extras.get("episode_stats", {}).items()})
        rollout.extras["rewards"] = rewards
        return rollout, advantages, metrics

    @property
    def share_prompts(self) -> bool:
        """trainer.share_prompt_prefix: forward passes compute each prompt once per group."""
        return bool(self.cfg.trainer.get("share_prompt_prefix", False))

    def fused_old_logprobs(self) -> bool:
        """Whether the old log-probs and entropy come from the update's own forward pass instead of
        a separate no-grad pass: with one minibatch per epoch (and no dynamic sampling) the first
        optimizer step covers every row and starts at the rollout policy, so its forward pass
        computes the same values; later epochs read them. Off when something needs them before the update
        (REPO-D's beta, the sampler's log-probs, the fp32 diagnostics) or when the old log-probs
        use other arithmetic than the training pass (precision.logprob_dtype, upcast_head), and
        with trainer.fuse_old_logprobs=false."""
        alg, prec = self.alg, self.cfg.precision
        return bool(self.cfg.trainer.get("fuse_old_logprobs", True)
                    and alg.num_minibatches == 1 and not alg.dynamic_sampling
                    and alg.regulator.name != "repo_d" and prec.old_logprobs == "trainer"
                    and prec.logprob_dtype == "float32" and not prec.upcast_head
                    and not self.run_precision_diagnostics() and not is_multi_turn(self.task))

    def rollout_policy_metrics(self, rollout: RolloutBatch) -> dict[str, float]:
        """Entropy, KL-to-reference and sampler/trainer mismatch of the rollout policy on the batch
        (the first call also fixes the controllers' target entropy)."""
        mask = rollout.response_mask
        trainer_logprobs, token_entropy = rollout.extras["trainer_logprobs"], rollout.extras["entropy"]
        entropy = self.global_mean(token_entropy, mask)
        if self.entropy0 is None:
            self.entropy0 = entropy
            for controller in self.controllers.values():
                controller.set_target(entropy)
        self.entropy_cumulative += entropy
        metrics = {
            "train/entropy": entropy,
            "train/entropy_sampled": self.global_mean(-trainer_logprobs, mask),
            "train/entropy_change_pct": 100.0 * (entropy - self.entropy0) / max(self.entropy0, 1e-12),
            "train/entropy_cumulative": self.entropy_cumulative,
        }
        if "ref_logprobs" in rollout.extras:
            kl = obj.kl_penalty(trainer_logprobs, rollout.extras["ref_logprobs"], self.alg.kl_loss_type)
            metrics["train/kl_ref"] = self.global_mean(kl, mask)
        if "sampler_logprobs" in rollout.extras:
            mean, peak = logp_mismatch(rollout.extras["sampler_logprobs"], trainer_logprobs, mask)
            metrics["precision/logp_mismatch_mean"], metrics["precision/logp_mismatch_max"] = mean, peak
        return metrics

    def generate(self, prompts, n: int, **options) -> RolloutBatch:
        """n samples per prompt from the policy (prompts in the chat template when the model has one),
        with the configured rollout engine (vLLM) or Hugging Face generate; options go to the backend."""
        ro = self.cfg.rollout
        if is_multi_turn(self.task):  # policy turns alternate with environment observations
            return run_episodes(self.policy, self.tokenizer, self.task, prompts, n, ro.max_new_tokens, ro.temperature,
                                ro.top_k, ro.top_p)
        texts = [self.format_prompt(p.text) for p in prompts]
        if self.rollout_engine is not None:
            return self.rollout_engine.generate(self.policy, self.tokenizer, texts, n, ro.max_new_tokens,
                                                ro.temperature, ro.top_k, ro.top_p, **options)
        with torch.autocast(device_type=self.device.type, enabled=False):  # the sampler runs in its own dtype
            sample = sampler_fn(ro.get("sampler", "generate"))
            return sample(self.sampler(), self.tokenizer, texts, n, ro.max_new_tokens, ro.temperature,
                          ro.top_k, ro.top_p, **options)

    def score(self, samples, rollout: RolloutBatch, stats: RewardStats) -> list[float]:
        """One reward per row: the task's reward of each completion, or each episode's return for a
        multi-turn task (whose environment failures the rollout driver counted and logged)."""
        if is_multi_turn(self.task):
            stats.errors += int(rollout.extras["episode_stats"]["env_errors"])
            return rollout.extras["episode_rewards"]
        return safe_rewards(self.task, samples, rollout.completions, stats)

    @torch.no_grad()
    def reference_logprobs(self, rollout: RolloutBatch) -> torch.Tensor:
        """Log-probs of the reference policy: the base model with the LoRA adapters disabled under
        LoRA (no second copy of the weights), else the frozen copy."""
        if self.reference_is_base:
            with self.policy.disable_adapter():
                return self.batched_token_stats(self.policy, rollout, False).logprobs
        return self.batched_token_stats(self.reference, rollout, False).logprobs

    # ----------------------------------------------------------------- distributed
    def world(self) -> tuple[int, int]:
        """(world size, rank) of torch.distributed; (1, 0) in a single process."""
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def all_reduce(self, tensor: torch.Tensor, op=None) -> torch.Tensor:
        """In-place all_reduce (sum by default) across ranks; the tensor itself in one process."""
        if self.world()[0] > 1:
            dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
        return tensor

    def global_mean(self, values: torch.Tensor, mask: torch.Tensor) -> float:
        """sum(values * mask) / sum(mask) over the response tokens of every rank's shard."""
        totals = self.all_reduce(torch.stack([(values * mask).sum(), mask.sum()]).double())
        return float(totals[0] / totals[1].clamp(min=1))

    def reduce_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """The mean of each metric over ranks (metrics that are already global are unchanged)."""
        world = self.world()[0]
        if world == 1 or not metrics:
            return metrics
        keys = sorted(metrics)
        values = torch.tensor([float("nan") if metrics[k] is None else float(metrics[k]) for k in keys],
                              dtype=torch.float64, device=self.device)
        self.all_reduce(values)
        return dict(zip(keys, (values / world).tolist()))

    def sampler(self):
        """The rollout policy in precision.sampler_dtype: the policy itself when its weights
        already have that dtype, else a copy kept outside the module tree (not checkpointed,
        not converted by Lightning) whose weights are re-synced from the policy every iteration."""
        dtype = dtype_of(self.cfg.precision.sampler_dtype, "precision.sampler_dtype")
        if next(self.policy.parameters()).dtype == dtype:
            return self.policy
        if self._sampler_copy is None:
            self._sampler_copy = [copy.deepcopy(self.policy).to(dtype).eval().requires_grad_(False)]
        sampler = self._sampler_copy[0]
        with torch.no_grad():
            for target, source in zip(sampler.parameters(), self.policy.parameters()):
                target.copy_(source)
        return sampler

    def run_precision_diagnostics(self) -> bool:
        """The fp32 clip-decision recomputation runs unless everything already is fp32."""
        prec = self.cfg.precision
        all_fp32 = (prec.trainer_precision == "32-true" and prec.logprob_dtype == "float32"
                    and next(self.policy.parameters()).dtype == torch.float32)
        return bool(prec.diagnostics) and prec.diagnostics_sample > 0 and not all_fp32 and self.alg.loss != "reinforce"

    @torch.no_grad()
    def fp32_logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        """Log-probs of the current policy recomputed entirely in fp32 (an fp32 copy of its weights)."""
        shadow = copy.deepcopy(self.policy).float()
        with torch.autocast(device_type=self.device.type, enabled=False):
            return self.token_stats(shadow, batch, with_entropy=False, fp32=True).logprobs

    def token_stats(self, model, batch: RolloutBatch, with_entropy: bool, fp32: bool = False) -> TokenStats:
        """response_token_stats with this run's precision (or all-fp32 for the diagnostics)."""
        prec = self.cfg.precision
        return response_token_stats(
            model, batch, self.cfg.rollout.temperature, self.cfg.monitor.chunk_size, with_entropy,
            logprob_dtype=torch.float32 if fp32 else dtype_of(prec.logprob_dtype, "precision.logprob_dtype"),
            upcast_head=False if fp32 else bool(prec.upcast_head), share_prompts=self.share_prompts)

    def micro_batches(self, rollout: RolloutBatch, rows: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
        """(rows, completion width) of each micro-batch: rows sorted by length and cut by
        trainer.micro_batch_size rows and trainer.micro_batch_tokens padded tokens."""
        lengths = rollout.response_lengths().cpu()
        batches = length_sorted_micro_batches(rows, lengths, self.cfg.trainer.micro_batch_size,
                                              self.cfg.trainer.get("micro_batch_tokens"), rollout.prompt_length)
        return [(micro, max(1, int(lengths[micro].max()))) for micro in batches]

    def batched_token_stats(self, model, rollout: RolloutBatch, with_entropy: bool, fp32: bool = False) -> TokenStats:
        """token_stats over length-sorted micro-batches, each trimmed to its longest completion;
        [N, T] results (0 beyond a row's micro-batch width: always outside the response mask)."""
        n, length = rollout.response_mask.shape
        logprobs = entropy = None
        for micro, width in self.micro_batches(rollout, torch.arange(n)):
            part = self.token_stats(model, rollout.select(micro, width), with_entropy, fp32)
            if logprobs is None:
                logprobs = part.logprobs.new_zeros(n, length)
                entropy = part.entropy.new_zeros(n, length) if with_entropy else None
            logprobs[micro, :width] = part.logprobs
            if with_entropy:
                entropy[micro, :width] = part.entropy
        return TokenStats(logprobs, entropy)

    # ----------------------------------------------------------------- update
    def token_advantages(self, rollout: RolloutBatch, advantages: torch.Tensor) -> torch.Tensor:
        """Per-token advantages fixed for the whole iteration: A_i on every response token, or
        REPO-D's A - beta * L with beta from the rollout's own log-probs and entropy (one batch
        statistic, so it does not depend on how minibatches are split)."""
        mask = rollout.response_mask
        tokens = advantages[:, None] * mask
        if self.alg.regulator.name == "repo_d":
            regulated, _beta = obj.repo_d(tokens, rollout.extras["old_logprobs"], rollout.extras["entropy"], mask,
                                          self.controllers["zeta"].zeta)
            return regulated.float() * mask
        return tokens

    def regulate(self, token_advantages: torch.Tensor, logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """REPO-R's transform with the current (detached) log-probs, applied at every minibatch."""
        reg = self.alg.regulator
        if reg.name == "repo_r":
            return obj.repo_r(token_advantages, logprobs.detach(), self.controllers["zeta"].zeta,
                              variant=reg.variant) * mask
        return token_advantages

    def loss_kwargs(self) -> dict:
        """The policy-loss configuration: the shared verl keys this loss takes (ADAPO's current
        clip_ratio_high in place of the configured one), plus algorithm.loss_kwargs passed as is."""
        alg = self.alg
        shared = dict(loss_agg_mode=alg.loss_agg_mode, clip_ratio_low=alg.clip_ratio_low,
                      clip_ratio_high=alg.clip_ratio_high, clip_ratio_c=alg.clip_ratio_c,
                      kl_loss_coef=alg.kl_loss_coef, kl_loss_type=alg.kl_loss_type,
                      entropy_coeff=self.entropy_coefficient())
        if "eps_high" in self.controllers:
            shared["clip_ratio_high"] = self.controllers["eps_high"].eps_high
        accepted = obj.policy_loss_keys(alg.loss)
        kwargs = {k: v for k, v in shared.items() if k in accepted}
        kwargs.update(alg.get("loss_kwargs") or {})
        return kwargs

    def entropy_coefficient(self) -> float:
        """The entropy bonus coefficient: the adaptive controller's (0 while entropy is above
        target), else algorithm.entropy_coeff."""
        if "entropy_coef" in self.controllers:
            return self.controllers["entropy_coef"].effective_coef
        return float(self.alg.entropy_coeff)

    def update_policy(self, rollout: RolloutBatch, advantages: torch.Tensor) -> dict[str, float]:
        """ppo_epochs x num_minibatches optimizer steps on the rollout, then the monitor and controllers."""
        alg = self.alg
        optimizer = self.optimizers()
        t0 = time.perf_counter()
        # Rows are numbered globally: rank r owns rows [r * n, (r + 1) * n) of the world's rollout
        # batch, so minibatches (and their shuffling) are the same whatever the number of ranks.
        world, rank = self.world()
        n_local = len(rollout.completions)
        keep = torch.zeros(n_local * world, dtype=torch.float64, device=self.device)
        keep[rank * n_local:(rank + 1) * n_local] = 1.0
        metrics: dict[str, float] = {}
        if alg.dynamic_sampling:
            keep[rank * n_local:(rank + 1) * n_local] = obj.dynamic_sampling_mask(
                rollout.extras["rewards"], alg.group_size).double().to(keep.device)
        keep = self.all_reduce(keep).cpu() > 0.5
        if alg.dynamic_sampling:
            metrics["train/dropped_groups"] = float((~keep).sum() / alg.group_size)
        rows = torch.arange(len(keep))[keep]
        rollout.extras["token_advantages"] = self.token_advantages(rollout, advantages)
        sums: dict[str, float] = {}
        steps = skipped = 0
        generator = torch.Generator().manual_seed(self.cfg.seed * 7919 + self.iteration)
        fill_old = self.fused_old_logprobs()  # the first step's forward pass gives the old log-probs
        for _epoch in range(alg.ppo_epochs):
            order = rows[torch.randperm(len(rows), generator=generator)] if len(rows) else rows
            for minibatch in order.tensor_split(alg.num_minibatches) if len(order) else []:
                if len(minibatch) == 0:
                    continue
                step_metrics = self.minibatch_step(rollout, minibatch, optimizer, fill_old=fill_old)
                if fill_old and step_metrics is None:  # the fused pass stopped early: the policy did not move
                    self.fill_old_logprobs(rollout)
                fill_old = False
                if step_metrics is None:
                    skipped += 1
                    continue
                steps += 1
                if steps == 1 and "ratio_mean" in step_metrics:
                    metrics["precision/ratio_bias"] = step_metrics["ratio_mean"] - 1.0
                for key, value in step_metrics.items():
                    sums[key] = sums.get(key, 0.0) + value
        # minibatch means; the update-time entropy / KL get their own names so they never
        # overwrite the rollout-batch train/entropy and train/kl_ref
        renamed = {"entropy": "update_entropy", "kl_ref": "update_kl_ref"}
        metrics.update({f"train/{renamed.get(k, k)}": v / steps for k, v in sums.items()} if steps else {})
        metrics["train/optimizer_steps"] = float(steps)
        metrics["train/nonfinite_skips"] = float(skipped)
        self.check_nonfinite(steps, skipped)
        metrics["time/update_s"] = time.perf_counter() - t0
        if self.fused_old_logprobs():  # the rollout policy's statistics came from the update's forward pass
            metrics.update(self.rollout_policy_metrics(rollout))
        metrics.update(self.entropy_dynamics(rollout))
        if self.controllers:
            metrics.update(self.update_controllers(metrics["train/entropy_after"]))
        return metrics

    def fill_old_logprobs(self, rollout: RolloutBatch) -> None:
        """The old log-probs and entropy from a separate no-grad pass (the unfused path)."""
        with torch.no_grad():
            before = self.batched_token_stats(self.policy, rollout, with_entropy=True)
        rollout.extras["old_logprobs"].copy_(before.logprobs)
        rollout.extras["entropy"].copy_(before.entropy)

    def minibatch_step(self, rollout: RolloutBatch, minibatch: torch.Tensor, optimizer,
                       fill_old: bool = False) -> dict[str, float] | None:
        """One optimizer step over `minibatch`, accumulated over micro-batches; the loss is
        normalised by the minibatch's global token / sequence counts so the split does not matter.
        fill_old: this step starts at the rollout policy and covers every row; its forward pass
        writes the old log-probs and entropy that the ratio (and later epochs) use.
        Returns None (and skips the step) when the loss or gradient is not finite."""
        alg = self.alg
        # `minibatch` holds global row ids; this rank trains on the ones it owns (all of them in one process)
        world, rank = self.world()
        n_local = len(rollout.completions)
        local = minibatch[(minibatch >= rank * n_local) & (minibatch < (rank + 1) * n_local)] - rank * n_local
        global_tokens = float(self.all_reduce(rollout.response_mask[local].sum().double()))
        kwargs = self.loss_kwargs()
        loss_entropy = alg.regulator.name == "repo_d" or kwargs.get("entropy_coeff", 0) > 0
        need_entropy = fill_old or loss_entropy
        optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        micros = self.micro_batches(rollout, local)
        if world > 1:  # every rank runs as many backward passes (each one is a collective under DDP)
            count = self.all_reduce(torch.tensor(len(micros), device=self.device), op=dist.ReduceOp.MAX)
            micros += [None] * (int(count) - len(micros))
        extras = rollout.extras
        for item in micros:
            scale = 1.0
            if item is None:  # no rows left on this rank: a zero-weighted pass keeps the ranks in step
                item, scale = (torch.zeros(1, dtype=torch.long), 1), 0.0
            micro, width = item
            part = rollout.select(micro, width)
            mask = part.response_mask
            with self.activation_offload():
                current = response_token_stats(self.policy, part, self.cfg.rollout.temperature,
                                               self.cfg.monitor.chunk_size, with_entropy=need_entropy,
                                               share_prompts=self.share_prompts)
                if fill_old and scale:  # this step starts at the rollout policy: old log-probs = current ones
                    extras["old_logprobs"][micro, :width] = current.logprobs.detach()
                    extras["entropy"][micro, :width] = current.entropy.detach()
                extra = {"entropy": current.entropy} if loss_entropy else {}
                if alg.kl_loss_coef > 0:
                    extra["ref_logprobs"] = extras["ref_logprobs"][micro, :width]
                loss, loss_metrics = obj.policy_loss(
                    alg.loss, current.logprobs, extras["old_logprobs"][micro, :width],
                    self.regulate(extras["token_advantages"][micro, :width], current.logprobs, mask), mask,
                    global_tokens=global_tokens, global_seqs=float(len(minibatch)),
                    max_response_length=rollout.response_mask.shape[1], **extra, **kwargs)
                loss = loss * scale
                finite = torch.isfinite(loss.detach()).double()
                if world > 1:
                    self.all_reduce(finite, op=dist.ReduceOp.MIN)
                if not finite:
                    optimizer.zero_grad(set_to_none=True)
                    return None
                # DDP / FSDP average gradients over ranks; the loss is already normalised by global
                # counts, so scaling by the world size makes the synced gradient the global one.
                self.manual_backward(loss * world if world > 1 else loss)
            weight = scale * float(mask.sum()) / max(global_tokens, 1.0)  # per-token metrics, token-weighted
            totals["loss"] = totals.get("loss", 0.0) + float(loss.detach())
            for key, value in loss_metrics.items():
                totals[key] = totals.get(key, 0.0) + weight * float(value)
        if world > 1:  # sums of per-rank parts -> the minibatch's global values
            keys = sorted(totals)
            summed = self.all_reduce(torch.tensor([totals[k] for k in keys], dtype=torch.float64, device=self.device))
            totals = dict(zip(keys, summed.tolist()))
        trainable = [p for p in self.policy.parameters() if p.requires_grad]
        grad_norm = self.clip_grad_norm(trainable)
        if not torch.isfinite(grad_norm):
            optimizer.zero_grad(set_to_none=True)
            return None
        totals["grad_norm"] = float(grad_norm)
        optimizer.step()
        return totals

    def clip_grad_norm(self, params) -> torch.Tensor:
        """Clip the gradient norm to optim.grad_clip and return it; under FSDP each rank holds a shard
        of the gradients, so the norm is the wrapped model's global one."""
        wrapped = self._trainer.strategy.model if self._trainer is not None else None
        if type(wrapped).__name__ == "FullyShardedDataParallel":
            return wrapped.clip_grad_norm_(self.cfg.optim.grad_clip)
        return torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)

    def activation_offload(self):
        """trainer.activation_offload: keep the activations saved for backward in (pinned) CPU memory."""
        if self.cfg.trainer.get("activation_offload", False):
            return torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available())
        return nullcontext()

    def check_nonfinite(self, steps: int, skipped: int, patience: int = 3) -> None:
        """Fail (the run ends FAILED, its last checkpoint intact) after `patience` iterations in a
        row whose every optimizer step had a non-finite loss or gradient."""
        self.nonfinite_streak = self.nonfinite_streak + 1 if skipped and not steps else 0
        if self.nonfinite_streak >= patience:
            raise FloatingPointError(
                f"loss or gradient was NaN/inf in every optimizer step of {patience} iterations in a row "
                f"(iteration {self.iteration}); resume from the last checkpoint with a lower optim.lr")

    # ----------------------------------------------------------------- entropy control
    @torch.no_grad()
    def entropy_dynamics(self, rollout: RolloutBatch) -> dict[str, float]:
        """Theorem 1's predicted entropy change next to the measured change on the same batch.
        Always on when a controller exists: the controllers read the post-update entropy."""
        if not (self.cfg.monitor.entropy_dynamics or self.controllers):
            return {}
        t0 = time.perf_counter()
        mask = rollout.response_mask
        old_lp, entropy = rollout.extras["old_logprobs"], rollout.extras["entropy"]
        after = self.batched_token_stats(self.policy, rollout, with_entropy=True)
        h_before, h_after = self.global_mean(entropy, mask), self.global_mean(after.entropy, mask)
        metrics = {"train/entropy_after": h_after, "train/entropy_meas_delta": h_after - h_before}
        regulated = self.regulate(rollout.extras["token_advantages"], old_lp, mask)
        metrics["train/entropy_pred_delta"] = float(obj.predicted_entropy_change(regulated, old_lp, entropy, mask))
        self.dynamics.append((metrics["train/entropy_pred_delta"], metrics["train/entropy_meas_delta"]))
        if "diag_rows" in rollout.extras:
            metrics.update(self.clip_flip_metrics(rollout, after.logprobs))
        metrics["time/monitor_s"] = time.perf_counter() - t0
        return metrics

    def clip_flip_metrics(self, rollout: RolloutBatch, logprobs_after: torch.Tensor) -> dict[str, float]:
        """Clip decisions at the end of the update, configured precision vs an fp32 recomputation of
        the same ratio, on the diagnostic sample of the batch (Theorem 3)."""
        rows = rollout.extras["diag_rows"]
        sample = rollout.select(rows)
        ratio = torch.exp(logprobs_after[rows] - rollout.extras["old_logprobs"][rows])
        ratio_fp32 = torch.exp(self.fp32_logprobs(sample) - rollout.extras["old_logprobs_fp32"])
        kwargs = self.loss_kwargs()
        flips = clip_flips(ratio, ratio_fp32, rollout.extras["token_advantages"][rows],
                           rollout.extras["old_logprobs"][rows], rollout.extras["entropy"][rows], sample.response_mask,
                           kwargs.get("clip_ratio_low", self.alg.clip_ratio_low),
                           kwargs.get("clip_ratio_high", self.alg.clip_ratio_high))
        return {f"precision/{k}": v for k, v in flips.items()}

    def update_controllers(self, entropy_after: float) -> dict[str, float]:
        """Once per iteration, after the update: move zeta / eps_high / entropy coef by comparing
        the post-update entropy of the rollout batch with the target."""
        out = {}
        for name, controller in self.controllers.items():
            out[f"control/{name}"] = float(controller.update(entropy_after))
            out["control/target_entropy"] = float(controller.target)
        return out

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """pass@k (unbiased), distinct correct answers and mean reward on each evaluation split.

        Sampling uses its own seeded RNG stream, so evaluating never changes the training
        trajectory (an evaluated and an unevaluated or resumed run train identically)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed * 31 + self.iteration)
            return self._evaluate()

    def _evaluate(self) -> dict[str, float]:
        t0 = time.perf_counter()
        ev, ro = self.cfg.eval, self.cfg.rollout
        metrics: dict[str, float] = {}
        lines = []
        for split, prompts in self.task.eval_prompts().items():
            n = ev.samples_per_prompt
            rollout = self.generate(prompts, n)
            samples = [prompts[i] for i in rollout.prompt_index.tolist()]
            rewards = self.score(samples, rollout, RewardStats())
            correct = [r >= SUCCESS_THRESHOLD for r in rewards]
            per_prompt = {k: [] for k in ev.k}
            distinct = []
            for p in range(len(prompts)):
                rows = slice(p * n, (p + 1) * n)
                c = sum(correct[rows])
                for k in ev.k:
                    per_prompt[k].append(pass_at_k(n, c, k))
                distinct.append(distinct_correct(rollout.completions[rows], correct[rows], self.task.answer_key))
            for k, values in per_prompt.items():
                metrics[f"{split}/pass_at_k/{k}"] = float(np.mean(values))
            metrics[f"{split}/pass_at_1"] = float(np.mean([r >= SUCCESS_THRESHOLD for r in rewards]))
            metrics[f"{split}/distinct_correct"] = float(np.mean(distinct))
            metrics[f"{split}/reward_mean"] = float(np.mean(rewards))
            per_prompt_shown = max(1, self.cfg.logger.log_generations // max(1, len(prompts)))
            for p in range(len(prompts)):
                for row in range(p * n, p * n + min(n, per_prompt_shown)):
                    lines.append(f"{split}\t{samples[row].text}\t{rollout.completions[row]!r}\t{rewards[row]:.2f}")
        metrics["time/eval_s"] = time.perf_counter() - t0
        self.eval_generations = "split\tprompt\tcompletion\treward\n" + "\n".join(lines) + "\n"
        return metrics

    def logger_log(self, metrics: dict[str, float], step: int) -> None:
        clean = {k: v for k, v in metrics.items() if v is not None and math.isfinite(v)}
        if self.logger is not None:
            self.logger.log_metrics(clean, step=step)
            if any(k.endswith("pass_at_1") for k in clean) and getattr(self, "eval_generations", None):
                self.logger.experiment.log_text(self.logger.run_id, self.eval_generations,
                                                f"generations/iteration_{step:05d}.tsv")

    # ----------------------------------------------------------------- checkpoint state
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        flush_metrics(self.logger)  # a run resumed from this checkpoint finds every metric logged before it
        checkpoint["rlx"] = {
            "controllers": {name: c.state_dict() for name, c in self.controllers.items()},
            "entropy0": self.entropy0,
            "entropy_cumulative": self.entropy_cumulative,
            "dynamics": self.dynamics,
            "nonfinite_streak": self.nonfinite_streak,
            "mlflow_run_id": self.logger.run_id if self.logger is not None else None,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_rng_state()},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["rlx"]
        for name, controller in self.controllers.items():
            controller.load_state_dict(state["controllers"][name])
        self.entropy0 = state["entropy0"]
        self.entropy_cumulative = state["entropy_cumulative"]
        self.dynamics = [tuple(x) for x in state["dynamics"]]
        self.nonfinite_streak = state["nonfinite_streak"]
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        name, keys, pos, has_gauss, cached = state["rng"]["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))

    def summary_metrics(self) -> dict[str, float]:
        """End-of-run summaries: the Theorem 1 prediction/measurement correlation over the run."""
        if not self.dynamics:
            return {}
        predicted, measured = zip(*self.dynamics)
        return {"summary/entropy_pred_meas_corr": pearson(predicted, measured)}
