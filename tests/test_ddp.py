"""Two-process DDP on gloo (real torch.distributed, launched torchrun-style, one process per rank)
gives the same loss and the same parameter update as one process on the same global batch; and a
two-rank `rlx-train trainer=ddp` run on the CPU writes exactly one MLflow run (rank 0's).

This file is also the worker script: `python -m torch.distributed.run --nproc-per-node 2
tests/test_ddp.py OUT` runs `update_step` on each rank.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlx.learner.distributed import leave_together

ROOT = Path(__file__).resolve().parent.parent
GLOBAL_PROMPTS = 4  # x group_size 4 = 16 sequences in the global batch
OVERRIDES = ["algorithm=repo_r", "algorithm.regulator.zeta_init=0.5", "algorithm.ppo_epochs=2",
             "algorithm.num_minibatches=2", "algorithm.group_size=4", "trainer.micro_batch_size=3",
             "optim.lr=0.5", "monitor.kl_ref=false", f"task.prompts_per_step={GLOBAL_PROMPTS}"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def update_step(out_dir: str, world: int) -> None:
    """One RL update (2 epochs x 2 minibatches, uneven micro-batches, REPO-R) under a real Lightning
    Trainer: strategy ddp with `world` ranks, or one process. Every rank builds the same global
    rollout batch (same seed and model) and trains on its rows only; rank 0 writes the results."""
    import lightning as L
    from hydra import compose, initialize_config_dir
    from torch.utils.data import DataLoader

    from rlx.build import instantiate_task
    from rlx.config import CONF_DIR
    from rlx.learner import batched_token_stats
    from rlx.learner.distributed import global_mean, world as world_of
    from rlx.learner.sampling import sample_prompts
    from rlx.models import build_model, char_tokenizer
    from rlx.module import RLModule
    from rlx.rollout import generate_rollouts

    torch.set_num_threads(1)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=debug", *OVERRIDES])
    task = instantiate_task(cfg.task)
    tokenizer = char_tokenizer(task.alphabet())
    policy = build_model(cfg.model, tokenizer, seed=0)
    initial = {k: v.detach().clone() for k, v in policy.state_dict().items()}

    class UpdateOnly(RLModule):
        def configure_optimizers(self):
            # plain SGD: the update is then -lr x the (clipped) gradient, so the comparison is tight;
            # Adam's first steps are ~lr x sign(grad) and turn float noise in near-zero gradients into
            # lr-sized differences, which says nothing about DDP.
            return torch.optim.SGD(self.policy.parameters(), lr=cfg.optim.lr)

        def training_step(self, batch, batch_idx):
            # the learner's update stage (train_on) on this rank's shard of one global batch, in
            # place of a whole iteration (which would sample a different batch on every rank)
            learner = self.learner
            assert not learner.fused_old_logprobs()  # the update uses the old log-probs set below
            world_size, rank = world_of()
            torch.manual_seed(123)  # the same global batch on every rank
            prompts = sample_prompts(learner.train_prompts, cfg.task.prompts_per_step, cfg.seed, 0)
            full = generate_rollouts(learner.policy, tokenizer, [p.text for p in prompts], cfg.algorithm.group_size,
                                     cfg.rollout.max_new_tokens)
            with torch.no_grad():
                stats = batched_token_stats(learner.policy, full, learner.settings, with_entropy=True)
            advantages = torch.randn(len(full.completions), generator=torch.Generator().manual_seed(7))
            n = len(full.completions) // world_size
            rows = torch.arange(rank * n, (rank + 1) * n)
            shard = full.select(rows)
            shard.extras.update(old_logprobs=stats.logprobs[rows], entropy=stats.entropy[rows],
                                rewards=torch.zeros(n), advantages=advantages[rows])
            entropy0 = global_mean(shard.extras["entropy"], shard.response_mask)
            learner.regulator.start(entropy0 * 2)  # below target: zeta moves
            self.result = learner.train_on(shard, self.optimizers(), 0)

    module = UpdateOnly(policy, tokenizer, task, cfg)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=world, num_nodes=1,
                        strategy="ddp" if world > 1 else "auto", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, DataLoader([0], batch_size=None))
    if trainer.is_global_zero:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in module.policy.state_dict().items()}, out / "params.pt")
        torch.save(initial, out / "initial.pt")
        (out / "metrics.json").write_text(json.dumps({**module.result, "world": trainer.world_size}))
    leave_together()  # rank 1 must not exit while rank 0 still writes (gloo aborts the process)


def torchrun(nproc: int, *args: str, cwd: Path = ROOT, timeout: int = 900) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node nproc ARGS` on one machine, gloo, a free loopback port."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *args]
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_on_the_same_global_batch(tmp_path):
    torchrun(2, str(Path(__file__)), str(tmp_path / "ddp"))
    update_step(str(tmp_path / "single"), world=1)
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert ddp["world"] == 2 and single["world"] == 1
    assert single["train/optimizer_steps"] == ddp["train/optimizer_steps"] == 4
    for key in ("train/loss", "train/grad_norm", "train/entropy_after", "train/entropy_meas_delta", "control/zeta",
                "train/clipfrac_low", "train/clipfrac_high"):
        assert ddp[key] == pytest.approx(single[key], rel=1e-4, abs=1e-6), key
    p_ddp = torch.load(tmp_path / "ddp" / "params.pt")
    p_single = torch.load(tmp_path / "single" / "params.pt")
    initial = torch.load(tmp_path / "single" / "initial.pt")
    assert p_ddp.keys() == p_single.keys() == initial.keys()
    moved = 0.0
    for name, value in p_single.items():
        torch.testing.assert_close(p_ddp[name], value, rtol=1e-5, atol=1e-7)
        moved = max(moved, float((value - initial[name]).abs().max()))
    assert moved > 1e-4  # the update did move the parameters


@pytest.mark.slow
def test_rlx_train_on_two_cpu_ranks_logs_one_mlflow_run(tmp_path, cache_dir):
    """The real entry point under torchrun: trainer=ddp on gloo; only rank 0 creates an MLflow run."""
    from hydra import compose, initialize_config_dir
    from mlflow.tracking import MlflowClient

    from rlx.build import instantiate_task, task_identity
    from rlx.config import CONF_DIR
    from rlx.warmstart import base_policy

    overrides = ["experiment=debug", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                 "trainer.max_steps=2", "eval.samples_per_prompt=1", "eval.k=[1]", "run_name=ddp-run",
                 f"cache_dir={cache_dir}", f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                 f"logger.artifact_location={tmp_path}/artifacts", f"checkpoint.dir={tmp_path}/checkpoints",
                 f"hydra.run.dir={tmp_path}/hydra"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=debug", f"cache_dir={cache_dir}"])
    base_policy(instantiate_task(cfg.task), task_identity(cfg.task), cfg.model, cfg.task.warmstart, cache_dir)
    torchrun(2, "-m", "rlx.train", *overrides)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_name for r in runs] == ["ddp-run"]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.strategy"] == "ddp" and run.data.params["trainer.devices"] == "2"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/entropy")]
    assert steps == [0, 1]
    assert list((tmp_path / "checkpoints").iterdir()) == [tmp_path / "checkpoints" / run.info.run_id]


if __name__ == "__main__":  # a torchrun worker
    update_step(sys.argv[1], world=int(os.environ["WORLD_SIZE"]))
