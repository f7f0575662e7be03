"""Config composition for every config file, base objectives under regulators, and validation
before any model is built (one-line errors naming key, value and what is allowed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from hydra.errors import HydraException
from omegaconf import OmegaConf

from rlx.config import CONF_DIR, ConfigError, base_names, validate
from rlx.objectives import policy_loss_keys

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")
PLAIN = ("cispo", "clip_cov", "dapo", "dr_grpo", "grpo", "gspo", "kl_cov", "loop", "rloo")
# every algorithm file that is not a plain objective puts an entropy regulator on a base
REGULATORS = tuple(sorted(p.stem for p in (CONF_DIR / "algorithm").glob("*.yaml") if p.stem not in PLAIN))
OBJECTIVE_KEYS = ("advantage", "adv_scale", "loss", "loss_agg_mode", "clip_ratio_low", "clip_ratio_high",
                  "clip_ratio_c", "group_size", "ppo_epochs", "num_minibatches", "kl_loss_coef", "kl_loss_type",
                  "dynamic_sampling", "loss_kwargs")


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def overrides_for(group: str, choice: str) -> list[str]:
    if group == "algorithm.base":  # a base goes under a regulator; none is a plain objective's
        return ["algorithm=grpo" if choice == "none" else "algorithm=repo_r", f"algorithm.base={choice}"]
    if (group, choice) == ("model", "hf"):  # the one file whose path is required (model.path=<id or dir>)
        return ["model=hf", "model.path=Qwen/Qwen3-0.6B"]
    return [f"{group}={choice}"]


def test_the_groups_are_known():
    assert set(PLAIN) | set(REGULATORS) == set(choices("algorithm"))
    assert base_names() == sorted(PLAIN)


@pytest.mark.parametrize("group,choice", [(g, c) for g in GROUPS for c in choices(g)])
def test_every_config_file_composes_and_validates(make_config, group, choice):
    # debug's 4 prompts per step do not split over the 8 ranks of trainer=ddp / fsdp
    cfg = make_config(*overrides_for(group, choice), debug=group not in ("experiment", "trainer"))
    OmegaConf.resolve(cfg)  # every interpolation resolves
    validate(cfg)


# --------------------------------------------------------------------------- base objectives
@pytest.mark.parametrize("base", PLAIN)
def test_every_regulator_composes_with_every_base(make_config, base):
    objective = make_config(f"algorithm={base}").algorithm
    for regulator in REGULATORS:
        alone = make_config(f"algorithm={regulator}").algorithm
        if regulator == "adapo" and "clip_ratio_high" not in policy_loss_keys(objective.loss):
            with pytest.raises(ConfigError, match="sets \\['clip_ratio_high'\\] for the loss"):
                validate(make_config(f"algorithm={regulator}", f"algorithm.base={base}"))
            continue  # ADAPO moves a clip this base's loss does not have
        cfg = validate(make_config(f"algorithm={regulator}", f"algorithm.base={base}")).algorithm
        for key in OBJECTIVE_KEYS:
            assert cfg[key] == objective[key], (regulator, key)
        assert cfg.regulator == alone.regulator and cfg.name == regulator and cfg.base == base
        expected = alone.entropy_coeff if regulator == "entropy_bonus" else objective.entropy_coeff
        assert cfg.entropy_coeff == expected


def test_default_bases_and_plain_objectives(make_config):
    assert make_config("algorithm=repo_r").algorithm.base == "grpo"
    assert make_config("algorithm=adapo").algorithm.base == "dapo"
    assert make_config("algorithm=repo_r_published").algorithm.base == "grpo"
    assert make_config("algorithm=repo_r_published", "algorithm.base=dapo").algorithm.base == "dapo"
    for name in PLAIN:
        alg = make_config(f"algorithm={name}").algorithm
        assert alg.name == name and alg.base is None and alg.regulator.name == "none"


def test_explicit_override_beats_the_base(make_config):
    cfg = make_config("algorithm=repo_r", "algorithm.base=dapo", "algorithm.clip_ratio_high=0.4")
    assert cfg.algorithm.clip_ratio_high == 0.4
    assert cfg.algorithm.loss_agg_mode == "token-mean"


@pytest.mark.parametrize("name", [n for n in PLAIN if n != "grpo"])
def test_base_objectives_state_only_what_differs_from_grpo(name):
    grpo = OmegaConf.load(CONF_DIR / "algorithm" / "grpo.yaml")
    own = OmegaConf.load(CONF_DIR / "algorithm" / f"{name}.yaml")
    assert list(own.defaults) == ["grpo", "_self_"]
    stated = [k for k in own if k not in ("defaults", "name")]
    assert 0 < len(stated) < 8, stated
    assert [k for k in stated if own[k] == grpo[k]] == [], "restates a GRPO value"
    assert set(stated) <= set(grpo)


@pytest.mark.parametrize("name", REGULATORS)
def test_regulator_files_state_no_objective_key(name):
    own = OmegaConf.load(CONF_DIR / "algorithm" / f"{name}.yaml")
    stated = set(own) - {"defaults", "name", "regulator"}
    assert stated <= {"entropy_coeff"}, stated  # entropy_bonus's coefficient is its knob
    assert "base" not in own


@pytest.mark.parametrize("name", base_names())
def test_base_group_files_put_the_objective_under_its_name(name):
    text = (CONF_DIR / "algorithm.base" / f"{name}.yaml").read_text()
    assert text.startswith("# @package algorithm\n")
    own = OmegaConf.load(CONF_DIR / "algorithm.base" / f"{name}.yaml")
    assert list(own.defaults) == ["_self_", f"/algorithm/{name}@_here_"] and own.base == name


WRONG_BASES = [  # an objective's own file takes no base: these would run GRPO's keys tagged as DAPO
    ["algorithm=grpo", "algorithm.base=dapo"],
    ["algorithm=grpo", "algorithm.regulator.name=repo_r", "algorithm.base=dapo"],
    ["algorithm=rloo", "algorithm.base=dapo"],
]


@pytest.mark.parametrize("overrides", WRONG_BASES, ids=" ".join)
def test_a_base_under_an_objective_file_fails(make_config, overrides):
    with pytest.raises(ConfigError) as err:
        validate(make_config(*overrides))
    assert str(err.value).startswith("algorithm.base='dapo': algorithm=") and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides", [["algorithm=repo_r", "algorithm.base=none"], ["algorithm=adapo", "~algorithm.base"]],
                         ids=" ".join)
def test_a_regulator_file_without_a_base_fails(make_config, overrides):
    with pytest.raises(ConfigError) as err:
        validate(make_config(*overrides))
    assert str(err.value).startswith("algorithm.base=None: algorithm=") and "'dapo'" in str(err.value)


def test_a_regulator_by_name_on_a_plain_objective_has_no_base(make_config):
    """The plug-in spelling (README): the objective is the algorithm file's own."""
    alg = validate(make_config("algorithm=dapo", "algorithm.regulator.name=repo_r")).algorithm
    assert alg.base is None and alg.regulator.name == "repo_r" and alg.clip_ratio_high == 0.28


@pytest.mark.parametrize("base", ["adapo", "repo_r", "nope"])
def test_a_base_that_is_not_an_objective_fails_to_compose_naming_the_choices(make_config, base):
    with pytest.raises(HydraException) as err:
        make_config("algorithm=repo_r", f"algorithm.base={base}")
    assert "algorithm.base" in str(err.value) and "dapo" in str(err.value)


SWEEP_APP = textwrap.dedent("""
    import sys
    import hydra
    @hydra.main(version_base="1.3", config_path=sys.argv.pop(1), config_name="config")
    def main(cfg):
        a = cfg.algorithm
        print("JOB", a.name, a.base, a.loss_agg_mode, a.clip_ratio_high, a.regulator.name)
    main()
""")


def test_multirun_sweeps_over_the_base(tmp_path):
    result = subprocess.run([sys.executable, "-c", SWEEP_APP, str(CONF_DIR), "--multirun", "algorithm=repo_r",
                             "algorithm.base=grpo,dapo", f"hydra.sweep.dir={tmp_path}/sweep"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    jobs = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("JOB ")]
    assert jobs == [["repo_r", "grpo", "seq-mean-token-mean", "0.2", "repo_r"],
                    ["repo_r", "dapo", "token-mean", "0.28", "repo_r"]]


# --------------------------------------------------------------------------- bad values
BAD_VALUES = [
    # types
    (["algorithm.clip_ratio_low=abc"], "algorithm.clip_ratio_low='abc': must be a float"),
    (["algorithm.group_size=2.5"], "algorithm.group_size=2.5: must be an integer"),
    (["algorithm.dynamic_sampling=maybe"], "algorithm.dynamic_sampling='maybe': must be a boolean"),
    (["algorithm.clip_ratio_c=high"], "algorithm.clip_ratio_c='high': must be a float or null"),
    (["eval.k=[1,x]"], "eval.k[1]='x': must be an integer"),
    (["trainer.micro_batch_tokens=many"], "trainer.micro_batch_tokens='many': must be an integer or null"),
    (["task.prompts_per_step=abc"], "task.prompts_per_step='abc': must be an integer"),
    (["task.warmstart.lr=fast"], "task.warmstart.lr='fast': must be a float"),
    (["+algorithm.clip_ratio_hgh=0.3"], "algorithm.clip_ratio_hgh=0.3: no such key in algorithm; allowed:"),
    (["logger.tracking_uri=${oc.env:RLX_TEST_UNSET_VARIABLE}"], "logger.tracking_uri='${oc.env:RLX_TEST_UNSET"),
    # algorithm
    (["algorithm=grpo", "algorithm.clip_ratio_low=-0.1"], "algorithm.clip_ratio_low=-0.1: must be > 0"),
    (["algorithm=grpo", "algorithm.clip_ratio_high=-0.2"], "algorithm.clip_ratio_high=-0.2"),
    (["algorithm=grpo", "algorithm.clip_ratio_low=1.5"], "algorithm.clip_ratio_low=1.5: must be <= 1"),
    (["algorithm=grpo", "algorithm.clip_ratio_c=0.5"], "algorithm.clip_ratio_c=0.5"),
    (["algorithm=grpo", "algorithm.group_size=1"], "algorithm.group_size=1: must be >= 2"),
    (["algorithm=rloo", "algorithm.group_size=1"], "algorithm.group_size=1"),
    (["algorithm=grpo", "algorithm.loss=nope"], "algorithm.loss='nope': allowed: ["),
    (["algorithm=grpo", "algorithm.advantage=nope"], "algorithm.advantage='nope': allowed: ["),
    (["algorithm=grpo", "algorithm.adv_scale=std"], "algorithm.adv_scale='std': allowed: ['group'"),
    (["algorithm=grpo", "algorithm.loss_agg_mode=mean"], "algorithm.loss_agg_mode='mean': allowed: ['token-mean'"),
    (["algorithm=grpo", "algorithm.kl_loss_type=k4"], "algorithm.kl_loss_type='k4': allowed: ['k1'"),
    (["algorithm=grpo", "algorithm.ppo_epochs=0"], "algorithm.ppo_epochs=0: must be >= 1"),
    (["algorithm=grpo", "algorithm.num_minibatches=1000"], "algorithm.num_minibatches=1000: must be <= the rollout"),
    (["algorithm=loop", "algorithm.loss=ppo"], "algorithm.loss_kwargs.clip_ratio=0.1: not a key of loss 'ppo'"),
    (["algorithm=grpo", "+algorithm.loss_kwargs.clip_ratio_high=0.3"],
     "algorithm.loss_kwargs.clip_ratio_high=0.3: set algorithm.clip_ratio_high instead"),
    # precision, model, rollout, trainer, run
    (["precision.trainer_precision=64"], "precision.trainer_precision='64': allowed: ["),
    (["precision.logprob_dtype=float64"], "precision.logprob_dtype='float64': allowed: ["),
    (["precision.old_logprobs=ref"], "precision.old_logprobs='ref': allowed: ['trainer', 'sampler']"),
    (["model=hf"], "model.path=None: a pretrained model needs"),
    (["model.source=hub"], "model.source='hub': allowed: ["),
    (["model.dtype=int8"], "model.dtype='int8': allowed: ["),
    (["model.architecture=gpt2"], "model.architecture='gpt2': allowed: ["),
    (["model.hidden_size=null"], "model.hidden_size=None: required by a model built from config"),
    (["model.chat_template=maybe"], "model.chat_template='maybe': allowed: ['auto', True, False]"),
    (["model=qwen3_8b", "model.lora.r=0"], "model.lora.r=0: must be >= 1"),
    (["model=qwen3_8b", "model.lora.dropout=1.0"], "model.lora.dropout=1.0: must be in [0, 1)"),
    (["rollout.sampler=beam"], "rollout.sampler='beam': allowed: ['generate', 'rlx']"),
    (["rollout.backend=sglang"], "rollout.backend='sglang': allowed: ['hf', 'vllm']"),
    (["rollout.temperature=0"], "rollout.temperature=0.0: must be > 0"),
    (["rollout.top_p=0"], "rollout.top_p=0.0: must be in (0, 1]"),
    (["rollout.max_new_tokens=0"], "rollout.max_new_tokens=0: must be >= 1"),
    (["trainer.max_steps=0"], "trainer.max_steps=0: must be >= 1"),
    (["trainer.strategy=dpp"], "trainer.strategy='dpp': allowed: ['auto'"),
    (["trainer=fsdp", "trainer.strategy.name=ddp"], "trainer.strategy.name='ddp': a strategy node configures FSDP"),
    (["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=3"], "task.prompts_per_step=4: must be divisible"),
    (["trainer.micro_batch_size=0"], "trainer.micro_batch_size=0: must be >= 1"),
    (["optim.lr=-1"], "optim.lr=-1.0: must be > 0"),
    (["eval_every=-1"], "eval_every=-1: must be >= 0"),
    (["checkpoint.every=0"], "checkpoint.every=0: must be >= 1"),
    (["eval.k=[1,64]"], "eval.k=[1, 64]: every k must be <= eval.samples_per_prompt=4"),
]

# the regulator classes own these rules (rlx.regulators.build_regulator names the key)
REGULATOR_VALUES = [
    (["algorithm=repo_r", "algorithm.regulator.zeta_init=0.005"], "algorithm.regulator.zeta_init=0.005"),
    (["algorithm=repo_r", "algorithm.regulator.zeta_min=0.5", "algorithm.regulator.zeta_max=0.1"],
     "algorithm.regulator.zeta_"),
    (["algorithm=repo_r", "algorithm.regulator.zeta_min=0"], "algorithm.regulator.zeta_min=0"),
    (["algorithm=repo_r", "algorithm.regulator.variant=both"], "algorithm.regulator.variant='both'"),
    (["algorithm=repo_r", "+algorithm.regulator.zeta=0.1"], "algorithm.regulator.zeta=0.1"),
    (["algorithm=repo_r", "algorithm.regulator.name=repo_x"], "algorithm.regulator.name='repo_x'"),
    (["algorithm=adapo", "algorithm.regulator.eps_min=0.5", "algorithm.regulator.eps_max=0.2"],
     "algorithm.regulator.eps_"),
    (["algorithm=adapo", "algorithm.regulator.factor=0.9"], "algorithm.regulator.factor=0.9"),
]


def check_one_line(make_config, overrides, start):
    cfg = make_config(*overrides)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert message.startswith(start), message
    assert "\n" not in message


@pytest.mark.parametrize("overrides,start", BAD_VALUES, ids=[" ".join(o) for o, _ in BAD_VALUES])
def test_bad_values_fail_in_one_line_naming_key_value_and_allowed(make_config, overrides, start):
    check_one_line(make_config, overrides, start)


@pytest.mark.parametrize("overrides,start", REGULATOR_VALUES, ids=[" ".join(o) for o, _ in REGULATOR_VALUES])
def test_bad_regulator_values_fail_in_validate(make_config, overrides, start):
    check_one_line(make_config, overrides, start)


def test_validate_returns_the_typed_config_and_leaves_its_input_alone(make_config):
    cfg = make_config("algorithm=repo_r", "algorithm.base=dapo", "algorithm.clip_ratio_low=1")
    checked = validate(cfg)
    assert checked is not cfg and isinstance(checked.algorithm.clip_ratio_low, float)
    assert checked.algorithm.base == "dapo" and checked.sequential is None
    assert "sequential" not in cfg  # the input is not changed
    assert OmegaConf.to_container(checked.logger)["experiment_name"] == "${task.name}"  # interpolations kept
    assert checked.logger.experiment_name == checked.task.name
    assert validate(checked) == checked  # idempotent (sequential phases validate again)


# --------------------------------------------------------------------------- the command line
def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlx.train", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_cli_prints_composed_config(tmp_path):
    result = run_cli("--cfg", "job", "algorithm=repo_r", "algorithm.base=dapo", "seed=3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = OmegaConf.create(result.stdout)
    assert printed.algorithm.name == "repo_r" and printed.algorithm.base == "dapo" and printed.seed == 3
    assert printed.algorithm.clip_ratio_high == 0.28


@pytest.mark.parametrize("value,line", [
    ("-0.1", "rlx-train: invalid config: algorithm.clip_ratio_low=-0.1: must be > 0 (0 would freeze the ratio at 1: no token could move past the old policy on that side)"),
    ("abc", "rlx-train: invalid config: algorithm.clip_ratio_low='abc': must be a float"),
])
def test_cli_bad_value_is_one_clear_line_and_builds_nothing(tmp_path, value, line):
    result = run_cli("algorithm=grpo", f"algorithm.clip_ratio_low={value}", f"cache_dir={tmp_path}/cache", cwd=tmp_path)
    assert result.returncode == 2
    assert line in result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "outputs" / "mlflow.db").exists()


def test_cli_unknown_algorithm_names_the_choices(tmp_path):
    result = run_cli("algorithm=nope", cwd=tmp_path)
    assert result.returncode != 0
    assert "algorithm" in result.stderr and "grpo" in result.stderr
