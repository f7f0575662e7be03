"""The config schema: every key of an rlx run, its type and its default, in one place.

`rlx.config.validate(cfg)` merges a composed Hydra config onto `RunConfig` (so every key below is
present, typed and defaulted), then checks the rules between keys. The defaults are the values of
the base files of conf/ (algorithm/grpo.yaml, precision/fp32.yaml, model_common.yaml,
rollout/hf.yaml + vllm.yaml, trainer/cpu.yaml, logger/mlflow.yaml, config.yaml);
tests/test_schema.py keeps the two in agreement.

Open nodes (keys not listed here): `algorithm.regulator` (name + the regulator class's options,
checked by rlx.regulators.build_regulator), `algorithm.loss_kwargs` (checked against
rlx.objectives.policy_loss_keys), `model.chat_template_kwargs`, `trainer.strategy` (a name or an
fsdp node), `sequential.phase_b`, and the task's constructor keys (the task node has `_target_`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

from omegaconf import MISSING


@dataclass
class RolloutCorrectionConfig:
    """Sampler/trainer mismatch correction (verl's algorithm.rollout_correction keys): weights
    pi_old / pi_sampler, truncated (rollout_is) or used to drop outliers (rollout_rs)."""

    rollout_is: Optional[str] = None              # null | token | sequence (rlx.objectives.ROLLOUT_IS_LEVELS)
    rollout_is_threshold: float = 2.0
    rollout_rs: Optional[str] = None              # null | token | sequence | geometric
    rollout_rs_threshold: Optional[float] = None  # null = rollout_is_threshold
    rollout_rs_threshold_lower: Optional[float] = None  # null = 1 / rollout_rs_threshold


@dataclass
class AlgorithmConfig:
    """An objective (advantage, policy loss, aggregation, clip, epochs; verl's key names) plus an
    entropy regulator. `base`: the objective under a regulator (null for a plain objective)."""

    name: str = "grpo"
    base: Optional[str] = None
    advantage: str = "grpo"                       # rlx.objectives.ADVANTAGE_ESTIMATORS
    adv_scale: str = "group"                      # rlx.objectives.advantages.GRPO_SCALES
    loss: str = "ppo"                             # rlx.objectives.POLICY_LOSSES
    loss_agg_mode: str = "seq-mean-token-mean"    # rlx.objectives.LOSS_AGG_MODES
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    clip_ratio_c: Optional[float] = None          # dual clip; null = off
    group_size: int = 8
    ppo_epochs: int = 2
    num_minibatches: int = 2
    entropy_coeff: float = 0.0
    kl_loss_coef: float = 0.0
    kl_loss_type: str = "k3"                      # rlx.objectives.KL_TYPES
    dynamic_sampling: bool = False
    loss_kwargs: Dict[str, Any] = field(default_factory=dict)
    rollout_correction: RolloutCorrectionConfig = field(default_factory=RolloutCorrectionConfig)
    regulator: Dict[str, Any] = field(default_factory=lambda: {"name": "none"})


@dataclass
class PrecisionConfig:
    name: str = "fp32"
    trainer_precision: str = "32-true"            # rlx.precision.TRAINER_PRECISIONS
    sampler_dtype: str = "float32"                # rlx.precision.DTYPES
    logprob_dtype: str = "float32"
    upcast_head: bool = False
    old_logprobs: str = "trainer"                 # trainer | sampler
    diagnostics: bool = True
    diagnostics_sample: int = 32


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: Union[int, float] = 32                 # peft lora_alpha
    dropout: float = 0.0
    target_modules: Any = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                         "up_proj", "down_proj"])  # a list or "all-linear"


@dataclass
class ModelConfig:
    """A model built from config (source=scratch: the architecture keys) or a pretrained one."""

    name: str = MISSING
    source: str = "scratch"                       # rlx.models.SOURCES
    path: Optional[str] = None
    revision: Optional[str] = None
    gguf_file: Optional[str] = None
    dtype: str = "float32"                        # rlx.models.DTYPES
    trust_remote_code: bool = False
    chat_template: Union[bool, str] = "auto"      # auto | true | false
    chat_template_kwargs: Dict[str, Any] = field(default_factory=dict)
    lora: LoraConfig = field(default_factory=LoraConfig)
    # source=scratch only (null for a pretrained model: its checkpoint has them)
    architecture: Optional[str] = None
    hidden_size: Optional[int] = None
    num_layers: Optional[int] = None
    num_heads: Optional[int] = None
    intermediate_size: Optional[int] = None
    max_position_embeddings: Optional[int] = None
    tie_word_embeddings: Optional[bool] = None


SCRATCH_KEYS = ("architecture", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                "max_position_embeddings", "tie_word_embeddings")


@dataclass
class WarmstartConfig:
    steps: int = 600
    batch_size: int = 128
    lr: float = 2.0e-3
    warmup_steps: int = 30
    seed: int = 0


@dataclass
class TaskConfig:
    """The trainer-side keys of a task; every other key goes to the `_target_` constructor."""

    _target_: str = MISSING
    name: str = MISSING
    prompts_per_step: int = 16
    reward_timeout_s: Optional[float] = 10.0      # per reward call (a batched task: per batch); null = none
    warmstart: WarmstartConfig = field(default_factory=WarmstartConfig)


TASK_TRAINER_KEYS = ("prompts_per_step", "reward_timeout_s", "warmstart")


@dataclass
class RolloutConfig:
    backend: str = "hf"                           # hf | vllm
    sampler: str = "rlx"                          # rlx.rollout.SAMPLERS
    max_new_tokens: int = 12
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    # backend=vllm only
    gpu_memory_utilization: float = 0.3
    dtype: str = "auto"
    enforce_eager: bool = False
    max_model_len: Optional[int] = None
    seed: int = 0


@dataclass
class TrainerConfig:
    max_steps: int = 150
    accelerator: str = "cpu"
    devices: Any = 1                              # Lightning's devices: an int, "auto" or a list
    num_nodes: int = 1
    strategy: Any = "auto"                        # rlx.config.STRATEGIES, or {name: fsdp, wrap: [...], ...}
    num_threads: Optional[int] = None
    micro_batch_size: int = 256
    micro_batch_tokens: Optional[int] = 4096
    share_prompt_prefix: bool = True
    fuse_old_logprobs: bool = True
    gradient_checkpointing: bool = False
    activation_offload: bool = False


@dataclass
class LoggerConfig:
    tracking_uri: str = "${oc.env:MLFLOW_TRACKING_URI,sqlite:///outputs/mlflow.db}"
    experiment_name: str = "${task.name}"
    artifact_location: str = "outputs/mlartifacts"
    log_generations: int = 32
    synchronous: bool = False
    enabled: bool = True


@dataclass
class OptimConfig:
    lr: float = 1.0e-4
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0


@dataclass
class CheckpointConfig:
    every: int = 25
    dir: str = "outputs/checkpoints"
    keep_last: int = 1                            # periodic files kept besides last.ckpt; -1 = all
    keep_best_by: Optional[str] = None            # a metric name, e.g. eval/pass_at_1 (rlx.checkpoints)
    keep_best_mode: str = "max"                   # rlx.checkpoints.MODES


@dataclass
class ExportConfig:
    """The trained policy as a Hugging Face directory (rlx.export) and an MLflow model."""

    enabled: bool = True
    dir: Optional[str] = None                     # null = <checkpoint.dir>/<run id>/export
    dtype: str = "fp32"                           # rlx.export.DTYPES
    merge: bool = True
    log_model: bool = True
    register_as: Optional[str] = None


@dataclass
class EvalConfig:
    samples_per_prompt: int = 16
    k: List[int] = field(default_factory=lambda: [1, 4, 16])
    batch_size: int = 256


@dataclass
class MonitorConfig:
    entropy_dynamics: bool = True
    chunk_size: int = 1024
    kl_ref: bool = True


@dataclass
class GuardConfig:
    """Iterations in a row a broken run is tolerated before it stops (rlx.learner.guards)."""

    nonfinite_patience: int = 3        # every optimizer step NaN/inf
    reward_failure_patience: int = 3   # every sample's reward failed
    divergence_patience: int = 2       # near-uniform policy or a vanished gradient; 0 = off


@dataclass
class SequentialConfig:
    """experiment=sequential: phase A (the run), then phase B from its last checkpoint."""

    phase_b_steps: int = 50
    gain_after: int = 50
    window: int = 5
    phase_b: Dict[str, Any] = field(default_factory=dict)  # task name -> the task keys phase B changes


@dataclass
class RunConfig:
    """The whole config of one run (conf/config.yaml and its groups)."""

    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    eval_every: int = 25
    resume: Optional[str] = None
    sweep_id: Optional[str] = None
    run_name: Optional[str] = None
    cache_dir: str = "outputs/cache"
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    sequential: Optional[SequentialConfig] = None
