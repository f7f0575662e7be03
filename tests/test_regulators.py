"""The regulator plug-in contract: names resolve, options are checked with one-line errors, hooks
are called as rlx/regulators/base.py documents, a regulator from outside the package trains
through rlx-train with its metrics in MLflow, and its state survives a checkpoint and resume=last."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from regulator_plugin import CountingRegulator
from rlx.build import instantiate_task
from rlx.config import CONF_DIR, ConfigError
from rlx.learner import Learner
from rlx.models import build_model, char_tokenizer
from rlx.regulators import Regulator, build_regulator, built_in_names
from rlx.regulators.top_entropy import TopEntropyTokens
from rlx.train import train

PLUGIN = "regulator_plugin:CountingRegulator"
ROOT = Path(__file__).resolve().parent.parent


def test_every_algorithm_file_names_a_built_in_regulator():
    names = {OmegaConf.load(p).get("regulator", {}).get("name") for p in (CONF_DIR / "algorithm").glob("*.yaml")}
    assert names - {None} <= set(built_in_names())
    assert {"none", "repo_r", "repo_d", "adapo", "entropy_bonus", "adaptive_entropy", "top_entropy"} <= set(
        built_in_names())


@pytest.mark.parametrize("node, message", [
    ({"name": "repo_r", "zeta_init": 0.005}, "algorithm.regulator.zeta_init=0.005"),
    ({"name": "repo_r", "zeta": 1}, "algorithm.regulator.zeta=1: not an option of regulator 'repo_r'"),
    ({"name": "adapo", "eps_init": "abc"}, "algorithm.regulator.eps_init='abc'"),
    ({"name": "top_entropy", "top_entropy_quantile": 0.0}, "algorithm.regulator.top_entropy_quantile=0.0"),
    ({"name": "no_such"}, "algorithm.regulator.name='no_such': allowed"),
    ({"name": "os.path:join"}, "not a subclass of rlx.regulators.Regulator"),
    ({"name": "no_such_module:Cls"}, "cannot import it"),
])
def test_bad_regulator_config_is_one_line_naming_the_key(node, message):
    with pytest.raises(ConfigError) as err:
        build_regulator(node)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_regulator_outside_the_package_loads_by_import_path():
    regulator = build_regulator({"name": PLUGIN, "scale": 0.5})
    assert isinstance(regulator, CountingRegulator) and isinstance(regulator, Regulator) and regulator.scale == 0.5


def tiny_learner(cfg, regulator: Regulator) -> Learner:
    task = instantiate_task(cfg.task)
    tokenizer = char_tokenizer(task.alphabet())
    return Learner(build_model(cfg.model, tokenizer, seed=0), tokenizer, task, cfg, regulator=regulator)


def test_hooks_are_called_as_documented(make_config):
    """grpo: 2 epochs x 2 minibatches of 16 rows, 4 rows per micro-batch: per iteration 4 optimizer
    steps (loss_overrides), 4 x 4 micro-batches + 1 monitor call (advantages), 1 rollout_advantages,
    1 update; start once per run."""
    cfg = make_config("algorithm=grpo", "trainer.micro_batch_size=4", "trainer.micro_batch_tokens=null",
                      "eval_every=0")
    regulator = CountingRegulator()
    learner = tiny_learner(cfg, regulator)
    optimizer = learner.make_optimizer()
    rollout_entropy = []
    for iteration in range(2):
        rollout, rollout_metrics = learner.collect(iteration)
        # rewards of an untrained policy are all 0: random advantages make the update move entropy
        rollout.extras["advantages"] = torch.randn(len(rollout.completions),
                                                   generator=torch.Generator().manual_seed(iteration))
        metrics = learner.train_on(rollout, optimizer, iteration)
        assert metrics["train/optimizer_steps"] == 4
        assert metrics["plugin/updates"] == iteration + 1
        assert abs(metrics["train/entropy_after"] - rollout_metrics["train/entropy"]) > 1e-6  # the update moved it
        rollout_entropy.append(rollout_metrics["train/entropy"])
    assert regulator.calls == {"start": 1, "rollout_advantages": 2, "advantages": 2 * 17, "loss_overrides": 8,
                               "update": 2}
    # update() gets the rollout policy's own entropy (pre-update), not the post-update re-score
    assert regulator.entropies == pytest.approx(rollout_entropy, rel=1e-12)


@pytest.mark.parametrize("fused", [True, False])
def test_controllers_read_the_rollout_entropy_without_a_post_update_pass(make_config, monkeypatch, fused):
    """With the Theorem-1 monitor off, REPO-R's controller still moves every iteration, from
    train/entropy (fused or not), and no forward pass runs after the update."""
    import rlx.learner.learner as learner_module

    cfg = make_config("algorithm=repo_r", "monitor.entropy_dynamics=false", "eval_every=0",
                      f"algorithm.num_minibatches={1 if fused else 2}")
    learner = tiny_learner(cfg, build_regulator(OmegaConf.to_container(cfg.algorithm.regulator)))
    assert learner.fused_old_logprobs() == fused
    optimizer = learner.make_optimizer()
    passes = []
    real = learner_module.batched_token_stats
    monkeypatch.setattr(learner_module, "batched_token_stats", lambda *a, **k: passes.append(1) or real(*a, **k))
    zetas, entropies = [], []
    for iteration in range(3):
        passes.clear()
        metrics = learner.iteration(iteration, optimizer)
        assert "train/entropy_after" not in metrics
        assert len(passes) == (0 if fused else 1) + 1  # old log-probs (unless fused) + the reference's
        zetas.append(metrics["control/zeta"])
        entropies.append(metrics["train/entropy"])
        assert metrics["control/at_bound"] == float(abs(metrics["control/zeta"]) >= learner.regulator.controller.zeta_max)
    target = learner.regulator.controller.target
    assert target == pytest.approx(entropies[0] * cfg.algorithm.regulator.target_ratio)
    # the doubling rule applied to the logged rollout entropies reproduces the logged zetas
    from rlx.control import ZetaController

    reg = cfg.algorithm.regulator
    replay = ZetaController(reg.zeta_init, reg.zeta_min, reg.zeta_max, reg.target_ratio)
    replay.set_target(entropies[0])
    assert [replay.update(h) for h in entropies] == zetas


def test_hooks_shape_what_the_loss_and_the_monitor_see(make_config):
    """Theorem 1's prediction is linear in the advantages: a regulator that doubles them doubles it;
    a loss override reaches the loss (clip_ratio_high=0 clips every token whose ratio rose)."""
    cfg = make_config("algorithm=grpo", "eval_every=0")
    predicted = []
    for scale in (1.0, 2.0):
        torch.manual_seed(0)
        learner = tiny_learner(cfg, CountingRegulator(scale=scale))
        rollout, _ = learner.collect(0)
        rollout.extras["advantages"] = torch.randn(len(rollout.completions), generator=torch.Generator().manual_seed(1))
        predicted.append(learner.train_on(rollout, learner.make_optimizer(), 0)["train/entropy_pred_delta"])
    assert predicted[0] != 0 and predicted[1] == pytest.approx(2 * predicted[0], rel=1e-5)
    torch.manual_seed(0)
    tight = tiny_learner(cfg, CountingRegulator(clip_ratio_high=0.0))
    rollout, _ = tight.collect(0)
    rollout.extras["advantages"] = torch.randn(len(rollout.completions), generator=torch.Generator().manual_seed(1))
    metrics = tight.train_on(rollout, tight.make_optimizer(), 0)
    assert metrics["train/clipfrac_high"] > 0


def test_the_core_runs_iterations_without_lightning(tmp_path):
    script = f"""
import sys, torch
sys.path.insert(0, {str(ROOT / 'tests')!r})
from rlx.build import compose, instantiate_task
from rlx.learner import Learner
from rlx.models import build_model, char_tokenizer
cfg = compose(["experiment=debug", "algorithm=repo_r", "logger.tracking_uri=sqlite:///{tmp_path}/m.db"])
task = instantiate_task(cfg.task)
tok = char_tokenizer(task.alphabet())
learner = Learner(build_model(cfg.model, tok, seed=0), tok, task, cfg)
opt = learner.make_optimizer()
metrics = [learner.iteration(i, opt) for i in range(2)]
assert metrics[1]["control/zeta"] != 0 and metrics[1]["train/optimizer_steps"] == 4, metrics[1]
assert not any(m == "lightning" or m.startswith(("lightning.", "pytorch_lightning")) for m in sys.modules)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_top_entropy_keeps_the_top_quantile_of_tokens():
    entropy = torch.tensor([[0.1, 0.9, 0.5, 0.0], [0.7, 0.3, 0.2, 0.8]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    advantages = torch.ones(2, 4) * mask
    regulator = TopEntropyTokens(top_entropy_quantile=3 / 7)  # 7 response tokens: keep the top 3
    shaped = regulator.rollout_advantages(advantages, torch.zeros(2, 4), entropy, mask)
    assert shaped.tolist() == [[0, 1, 0, 0], [1, 0, 0, 1]]
    assert regulator.update(0.5)["train/high_entropy_token_frac"] == pytest.approx(3 / 7)
    keep_all = TopEntropyTokens(top_entropy_quantile=1.0).rollout_advantages(advantages, advantages, entropy, mask)
    assert torch.equal(keep_all, advantages)


@pytest.mark.slow
def test_plugin_trains_through_rlx_train_and_resumes_with_its_state(make_config, store):
    common = ["algorithm=grpo", f"algorithm.regulator.name={PLUGIN}", "+algorithm.regulator.scale=0.5",
              "checkpoint.every=1"]
    straight = train(make_config(*common, "trainer.max_steps=4", "run_name=plugin-straight"))
    train(make_config(*common, "trainer.max_steps=2", "run_name=plugin-interrupted"))
    resumed = train(make_config(*common, "trainer.max_steps=4", "resume=last"))
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("expression").experiment_id
    run = next(r for r in client.search_runs([experiment]) if r.info.run_name == "plugin-interrupted")
    updates = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "plugin/updates"))
    assert updates == [(0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0)]  # the counter came back from the checkpoint
    assert run.data.params["algorithm.regulator.name"] == PLUGIN
    assert resumed["plugin/entropy"] == pytest.approx(straight["plugin/entropy"], rel=1e-6)
