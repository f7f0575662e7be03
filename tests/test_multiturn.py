"""The multi-turn rollout driver with a real (random-init) tiny HF model: the loss mask covers
exactly the policy's tokens, caps truncate, broken environments never crash the run."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config

from rlx.models import SPECIAL_TOKENS, build_model, char_tokenizer
from rlx.learner.token_stats import ForwardSettings, response_token_stats
from rlx.rollout.multiturn import cut_turn, left_pad, run_episodes
from rlx.tasks.base import TURN_END, Environment, MultiTurnTask, Prompt, RewardStats, StepResult, episode_warmstart_pairs
from rlx.tasks.toolworld import ToolWorldTask

ALPHABET = "abcdefghijo0123456789:>\n"


class Counter(Environment):
    """Observation k is ">k\\n"; done after `turns` actions; reward 1 per action that is "a"."""

    def __init__(self, turns: int, fail_on: int | None = None, reward_value=None):
        self.turns, self.fail_on, self.reward_value = turns, fail_on, reward_value
        self.closed = False

    def reset(self) -> str:
        self.k = 0
        return "go:\n"

    def step(self, action: str) -> StepResult:
        self.k += 1
        if self.fail_on == self.k:
            raise RuntimeError("environment bug")
        reward = self.reward_value if self.reward_value is not None else float(action == "a")
        return StepResult(f">{self.k}\n", reward, self.k >= self.turns)

    def close(self) -> None:
        self.closed = True


class CounterTask(MultiTurnTask):
    name = "counter"

    def __init__(self, turns=3, max_turns=4, max_turn_tokens=6, max_total_tokens=200, **env):
        self.turns, self.env = turns, env
        self.max_turns, self.max_turn_tokens, self.max_total_tokens = max_turns, max_turn_tokens, max_total_tokens
        self.made: list[Counter] = []

    def make_env(self, prompt):
        env = Counter(self.turns, **self.env)
        self.made.append(env)
        return env


@pytest.fixture(scope="module")
def tiny_cfg(store, cache_dir):
    return compose_config(store, cache_dir).model


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_cfg):
    tokenizer = char_tokenizer(ALPHABET)
    model = build_model(tiny_cfg, tokenizer, seed=0)
    return model, tokenizer  # random init: EOS comes about once in len(vocab) tokens


def play(model_and_tokenizer, task, n_prompts=2, group=3, seed=0, stats=None):
    model, tokenizer = model_and_tokenizer
    torch.manual_seed(seed)
    prompts = [Prompt(f"p{i}") for i in range(n_prompts)]
    return run_episodes(model, tokenizer, task, prompts, group, max_new_tokens=6, stats=stats)


def segments(row_ids, row_mask):
    """Maximal runs of equal mask value: [(is_policy, [ids])]."""
    out = []
    for token, m in zip(row_ids, row_mask):
        if out and out[-1][0] == m:
            out[-1][1].append(token)
        else:
            out.append((m, [token]))
    return out


def test_turn_end_text_is_the_char_tokenizer_eos():
    tokenizer = char_tokenizer(ALPHABET)
    assert TURN_END == SPECIAL_TOKENS[2] == tokenizer.eos_token
    assert tokenizer("a" + TURN_END + "b", add_special_tokens=False).input_ids[1] == tokenizer.eos_token_id


def test_mask_covers_exactly_the_policy_tokens(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    task = CounterTask(turns=3, max_turn_tokens=30, max_total_tokens=500)
    batch = play(model_and_tokenizer, task, seed=1)
    n = 6
    assert batch.response_mask.shape == batch.responses.shape and batch.input_ids.shape[0] == n
    assert batch.prompt_index.tolist() == [0, 0, 0, 1, 1, 1]
    eos = tokenizer.eos_token_id
    for i in range(n):
        length = int(batch.attention_mask[i, batch.prompt_length:].sum())
        ids = batch.responses[i, :length].tolist()
        mask = batch.response_mask[i, :length].long().tolist()
        assert batch.response_mask[i, length:].sum() == 0  # padding is never trained on
        turns = batch.extras["turns"][i]
        runs = segments(ids, mask)
        policy_runs = [tokens for is_policy, tokens in runs if is_policy]
        env_runs = [tokens for is_policy, tokens in runs if not is_policy]
        actions = batch.extras["actions"][i]
        assert batch.completions[i] == "\n".join(actions)
        assert len(policy_runs) == turns == len(actions)
        for tokens, action in zip(policy_runs, actions):
            if tokens[-1] == eos:  # a turn ends with the EOS the policy sampled, which is trained on
                assert tokenizer.decode(tokens[:-1], skip_special_tokens=True) == action and eos not in tokens[:-1]
        observations = [tokenizer.decode(tokens) for tokens in env_runs]
        assert observations == [f">{k}\n" for k in range(1, len(observations) + 1)]
        if not batch.truncated[i]:
            assert turns == 3 and len(observations) == 2  # the last step ends the episode: no observation
        prompt = batch.input_ids[i, : batch.prompt_length][batch.attention_mask[i, : batch.prompt_length].bool()]
        assert tokenizer.decode(prompt.tolist(), skip_special_tokens=True) == "go:\n"
    assert all(env.closed for env in task.made)


def test_the_packed_batch_feeds_the_trainer_statistics(model_and_tokenizer):
    model, _ = model_and_tokenizer
    batch = play(model_and_tokenizer, CounterTask(turns=2, max_turn_tokens=30))
    settings = ForwardSettings(temperature=1.0, chunk_size=1024)
    stats = response_token_stats(model, batch, settings, with_entropy=True)
    assert stats.logprobs.shape == batch.response_mask.shape
    assert torch.isfinite(stats.logprobs[batch.response_mask.bool()]).all()
    assert torch.isfinite(stats.entropy).all()
    # the same tokens scored one episode at a time give the same log-probs (padding is inert)
    for i in range(len(batch.completions)):
        single = response_token_stats(model, batch.select(torch.tensor([i])), settings, False).logprobs
        mask = batch.response_mask[i].bool()
        assert torch.allclose(single[0][mask], stats.logprobs[i][mask], atol=1e-4)


def test_turn_cap_truncates(model_and_tokenizer):
    batch = play(model_and_tokenizer, CounterTask(turns=10, max_turns=2, max_turn_tokens=30))
    ended = [t for t, tr in zip(batch.extras["turns"], batch.truncated.tolist()) if tr]
    assert batch.truncated.all() and max(batch.extras["turns"]) <= 2 and ended


def test_token_caps_truncate(model_and_tokenizer):
    batch = play(model_and_tokenizer, CounterTask(turns=3, max_turn_tokens=1, max_total_tokens=500))
    # one token per turn: only an immediate EOS finishes a turn, anything else is cut and truncates
    for i in range(len(batch.completions)):
        policy = int(batch.response_mask[i].sum())
        assert policy <= 3
        if batch.extras["turns"][i] < 3:
            assert batch.truncated[i]
    total = play(model_and_tokenizer, CounterTask(turns=50, max_turns=50, max_turn_tokens=30, max_total_tokens=12))
    lengths = total.attention_mask[:, total.prompt_length:].sum(-1)
    assert (lengths <= 12).all() and total.truncated.all()


def test_environment_failures_score_zero_and_are_counted(model_and_tokenizer):
    stats = RewardStats()
    task = CounterTask(turns=3, max_turn_tokens=30, fail_on=1)
    batch = play(model_and_tokenizer, task, stats=stats)
    finished = [t >= 1 for t in batch.extras["turns"]]
    assert stats.errors == sum(1 for i, f in enumerate(finished) if f and not batch.truncated[i]) or stats.errors > 0
    assert all(r == 0.0 for r in batch.extras["episode_rewards"])
    assert "environment bug" in stats.first_error
    bad = RewardStats()
    batch = play(model_and_tokenizer, CounterTask(turns=1, max_turn_tokens=30, reward_value="high"), stats=bad)
    assert bad.errors > 0 and all(r == 0.0 for r in batch.extras["episode_rewards"])


def test_toolworld_episodes_with_a_random_policy_never_crash(tiny_cfg):
    tw = ToolWorldTask(n_train=4, n_eval=2, max_turns=3, max_turn_tokens=20, max_total_tokens=160)
    tokenizer = char_tokenizer(tw.alphabet())
    model = build_model(tiny_cfg, tokenizer, seed=1)
    stats = RewardStats()
    torch.manual_seed(0)
    batch = run_episodes(model, tokenizer, tw, tw.train_prompts()[:2], 4, max_new_tokens=12, stats=stats)
    assert stats.errors == 0 and len(batch.completions) == 8
    assert all(r == 0.0 for r in batch.extras["episode_rewards"])
    assert batch.truncated.all()  # random text never answers


def test_warmstart_pairs_match_the_driver_token_stream():
    tokenizer = char_tokenizer(ALPHABET)
    pairs = episode_warmstart_pairs("go:\n", [("ab", ">1\n"), ("c", ">2\n"), ("d", "")])
    assert pairs[2] == ("go:\nab" + TURN_END + ">1\nc" + TURN_END + ">2\n", "d")
    ids = tokenizer(pairs[2][0], add_special_tokens=False).input_ids
    driver = (tokenizer("go:\n", add_special_tokens=False).input_ids + tokenizer("ab").input_ids
              + [tokenizer.eos_token_id] + tokenizer(">1\n").input_ids + tokenizer("c").input_ids
              + [tokenizer.eos_token_id] + tokenizer(">2\n").input_ids)
    assert ids == driver


def test_helpers():
    assert cut_turn([5, 6, 2, 0, 0], eos_id=2, budget=10) == ([5, 6, 2], True)
    assert cut_turn([5, 6, 7], eos_id=2, budget=2) == ([5, 6], False)
    ids, mask = left_pad([[1, 2], [3]], pad_id=0)
    assert ids.tolist() == [[1, 2], [0, 3]] and mask.tolist() == [[1, 1], [0, 1]]


@pytest.mark.slow
def test_toolworld_trains_end_to_end(make_config, store):
    """The real trainer on the tool world: multi-turn rollouts, masked loss, MLflow metrics."""
    import math

    from mlflow.tracking import MlflowClient

    from rlx.train import train

    cfg = make_config("task=toolworld", "algorithm=grpo", "task.n_train=16", "task.n_eval=4", "task.eval_train_size=4",
                      "task.max_turns=2", "task.max_turn_tokens=24", "task.warmstart.steps=30",
                      "task.warmstart.batch_size=16",
                      "eval.samples_per_prompt=2", "eval.k=[1,2]", "run_name=toolworld-e2e")
    final = train(cfg)
    assert math.isfinite(final["train/entropy"]) and final["train/optimizer_steps"] > 0
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("toolworld").experiment_id],
                             "attributes.run_name = 'toolworld-e2e'")[0]
    assert run.info.status == "FINISHED"
    for key in ("train/reward_mean", "train/turns_mean", "train/env_token_frac", "train/truncated_frac",
                "train/entropy", "train/response_length"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1, 2], key
    assert 0 <= run.data.metrics["train/env_token_frac"] < 1
    assert {"eval/pass_at_1", "eval/pass_at_k/02", "eval_train/reward_mean"} <= set(run.data.metrics)


def test_packed_log_probs_are_the_policy_s_own(model_and_tokenizer):
    """Every policy token's log-prob in the packed batch equals log pi(token | unpadded prefix)
    from a plain forward: the loss trains exactly the distribution that sampled the turn."""
    model, tokenizer = model_and_tokenizer
    batch = play(model_and_tokenizer, CounterTask(turns=3, max_turn_tokens=12), n_prompts=1, group=3, seed=2)
    settings = ForwardSettings(temperature=1.0, chunk_size=1024)
    packed = response_token_stats(model, batch, settings, with_entropy=False).logprobs
    for i in range(len(batch.completions)):
        ids = batch.input_ids[i][batch.attention_mask[i].bool()]
        prompt_len = int(batch.attention_mask[i, : batch.prompt_length].sum())
        with torch.no_grad():
            logits = model(input_ids=ids[None]).logits[0].float().log_softmax(-1)
        for t in torch.nonzero(batch.response_mask[i]).flatten().tolist():
            position = prompt_len + t
            assert float(packed[i, t]) == pytest.approx(float(logits[position - 1, ids[position]]), abs=1e-4)
