"""Multi-turn rollouts: the policy and an environment take turns until the episode ends.

One episode's tokens, after the left-padded prompt (<bos> + the first observation):

    action_1 <eos> observation_1 action_2 <eos> observation_2 ... action_n <eos>
    |-policy--|    |--env------| |-policy--|    |--env------|     |-policy--|

`response_mask` is 1 on policy tokens (each action and the EOS that ends its turn) and 0 on
observation tokens and padding, so environment text never enters the loss, the entropy or the
token counts. All live episodes of a batch generate their next turn in one `generate` call
(contexts left-padded, positions skipping the padding, as in single-turn rollouts).

Caps: at most `max_turns` policy turns, `max_turn_tokens` generated tokens per turn and
`max_total_tokens` tokens after the prompt (policy + environment). An episode stops as
*truncated* when a turn ends without EOS (it hit a token cap), when an observation does not fit
in the token budget, or when the turn cap is reached before the environment said done. Its
return is the sum of the step rewards it earned (0 for a turn that was cut off).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from rlx.rollout.batch import RolloutBatch
from rlx.tasks.base import USER_CODE_ERRORS, MultiTurnTask, Prompt, RewardStats, as_reward

ERROR_OBSERVATION = "\n"  # what the policy sees after a turn whose environment step failed


@dataclass
class Episode:
    """The growing token record of one episode (everything after the prompt)."""

    prompt_ids: list[int]
    env: object
    ids: list[int] = field(default_factory=list)
    policy: list[int] = field(default_factory=list)  # 1 = policy token, 0 = environment token
    actions: list[str] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    reward: float = 0.0
    done: bool = False
    truncated: bool = False
    env_errors: int = 0

    def extend(self, token_ids: Sequence[int], from_policy: bool) -> None:
        self.ids.extend(token_ids)
        self.policy.extend([int(from_policy)] * len(token_ids))


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """rows left-padded to the longest: (ids [N, W], attention_mask [N, W] with 1 on real tokens)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row):] = 1
    return ids, mask


def right_pad(rows: Sequence[Sequence[int]], pad_value: int, width: int | None = None) -> torch.Tensor:
    """rows right-padded with pad_value to `width` (default: the longest row)."""
    width = max([len(r) for r in rows] + [0]) if width is None else width
    out = torch.full((len(rows), width), pad_value, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def cut_turn(generated: Sequence[int], eos_id: int, budget: int) -> tuple[list[int], bool]:
    """The policy's turn from one row of `generate` output: tokens up to and including the
    first EOS, at most `budget` tokens. Returns (tokens, ended) with ended = the turn closed
    with EOS inside the budget. Padding after an early EOS is dropped."""
    tokens: list[int] = []
    for token in list(generated)[:budget]:
        tokens.append(int(token))
        if token == eos_id:
            return tokens, True
    return tokens, False


@torch.no_grad()
def sample_turn(model, tokenizer, contexts: Sequence[Sequence[int]], max_new_tokens: int, temperature: float,
                top_k: int, top_p: float) -> torch.Tensor:
    """One generated turn per context ([N, <= max_new_tokens], EOS then padding after it),
    sampled from softmax(logits / temperature) like single-turn rollouts."""
    input_ids, attention_mask = left_pad(contexts, tokenizer.pad_token_id)
    input_ids, attention_mask = input_ids.to(model.device), attention_mask.to(model.device)
    was_training = model.training
    model.eval()
    try:
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=True,
                                temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    except RuntimeError as exc:
        if "probability tensor contains" in str(exc):
            raise FloatingPointError(
                "the policy produced non-finite logits during generation (NaN/inf weights?): " + str(exc)) from exc
        raise
    finally:
        model.train(was_training)
    return output[:, input_ids.shape[1]:].cpu()


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def prompt_ids(tokenizer, first_observation: str) -> list[int]:
    """<bos> + the first observation's tokens (no <bos> when the tokenizer has none)."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + encode(tokenizer, first_observation)


def env_step(episode: Episode, action: str, task_name: str, stats: RewardStats):
    """The environment's answer to one action; an environment that raises or returns a bad
    reward ends the episode with that step scored 0 (counted in `stats`), never the run."""
    try:
        result = episode.env.step(action)
        reward = as_reward(result.reward)
        return result.observation, reward, bool(result.done)
    except USER_CODE_ERRORS as exc:  # a broken environment (even one calling sys.exit) must not kill a long run
        stats.record(task_name, exc, source="environment")
        episode.env_errors += 1
        return ERROR_OBSERVATION, 0.0, True


def close_env(episode: Episode, task_name: str, stats: RewardStats) -> None:
    """Close the episode's environment; a failure to close is counted, never raised."""
    if episode.env is None:
        return
    try:
        episode.env.close()
    except USER_CODE_ERRORS as exc:
        stats.record(task_name, exc, source="environment")


def start_episodes(task: MultiTurnTask, tokenizer, prompts: Sequence[Prompt], group_size: int,
                   stats: RewardStats) -> list[Episode]:
    """group_size fresh environments per prompt (groups contiguous), each reset once."""
    episodes = []
    for prompt in prompts:
        for _ in range(group_size):
            try:
                env = task.make_env(prompt)
                first = env.reset()
            except USER_CODE_ERRORS as exc:
                stats.record(task.name, exc, source="environment")
                first, env = prompt.text, None
            episode = Episode(prompt_ids(tokenizer, first), env)
            if env is None:
                episode.done = episode.truncated = True
                episode.env_errors = 1
            episodes.append(episode)
    return episodes


def play_turn(model, tokenizer, task: MultiTurnTask, live: list[Episode], turn_tokens: int, max_total: int,
              sampling: tuple[float, int, float], stats: RewardStats) -> None:
    """Every live episode generates one action, then the environment answers it."""
    budgets = [max_total - len(e.ids) for e in live]
    width = min(turn_tokens, max(budgets))
    generated = sample_turn(model, tokenizer, [e.prompt_ids + e.ids for e in live], width, *sampling)
    for episode, row, budget in zip(live, generated, budgets):
        tokens, ended = cut_turn(row.tolist(), tokenizer.eos_token_id, min(turn_tokens, budget))
        episode.extend(tokens, from_policy=True)
        action = tokenizer.decode(tokens[:-1] if ended else tokens, skip_special_tokens=True)
        episode.actions.append(action)
        if not ended:  # the turn hit a token cap: the action is incomplete, the episode stops here
            episode.done = episode.truncated = True
            continue
        observation, reward, done = env_step(episode, action, task.name, stats)
        episode.reward += reward
        episode.done = done
        if done:
            continue
        obs_ids = encode(tokenizer, observation)
        room = max_total - len(episode.ids)
        episode.observations.append(observation)
        episode.extend(obs_ids[:room], from_policy=False)
        if len(obs_ids) >= room:  # no room left for another policy token
            episode.done = episode.truncated = True


def run_episodes(model, tokenizer, task: MultiTurnTask, prompts: Sequence[Prompt], group_size: int,
                 max_new_tokens: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 stats: RewardStats | None = None) -> RolloutBatch:
    """Play `group_size` episodes per prompt to the end (or a cap) and pack them as a RolloutBatch.

    Per-turn cap: task.max_turn_tokens, or max_new_tokens when the task leaves it None.
    extras: "episode_rewards" (list of returns), "turns" (policy turns per episode), "actions"
    (each episode's turns as text; `completions` joins them with newlines), "transcripts"
    (observations and actions as text), "episode_stats" (batch means).
    """
    stats = stats if stats is not None else RewardStats()
    turn_tokens = int(task.max_turn_tokens or max_new_tokens)
    max_total = int(task.max_total_tokens)
    episodes = start_episodes(task, tokenizer, prompts, group_size, stats)
    for _turn in range(int(task.max_turns)):
        live = [e for e in episodes if not e.done]
        if not live:
            break
        play_turn(model, tokenizer, task, live, turn_tokens, max_total, (temperature, top_k, top_p), stats)
    for episode in episodes:
        if not episode.done:  # turn cap reached before the environment ended the episode
            episode.done = episode.truncated = True
        close_env(episode, task.name, stats)
    return pack_episodes(episodes, tokenizer, len(prompts), group_size)


def pack_episodes(episodes: Sequence[Episode], tokenizer, n_prompts: int, group_size: int) -> RolloutBatch:
    """[left-padded prompt | right-padded turns] with the mask of policy tokens."""
    prompt_ids, prompt_mask = left_pad([e.prompt_ids for e in episodes], tokenizer.pad_token_id)
    width = max([len(e.ids) for e in episodes] + [1])
    responses = right_pad([e.ids for e in episodes], tokenizer.pad_token_id, width)
    response_attention = right_pad([[1] * len(e.ids) for e in episodes], 0, width)
    response_mask = right_pad([e.policy for e in episodes], 0, width).float()
    n_policy = response_mask.sum(-1)
    n_total = response_attention.sum(-1).float()
    return RolloutBatch(
        input_ids=torch.cat([prompt_ids, responses], dim=1),
        attention_mask=torch.cat([prompt_mask, response_attention], dim=1),
        response_mask=response_mask,
        prompt_length=prompt_ids.shape[1],
        completions=["\n".join(e.actions) for e in episodes],
        prompt_index=torch.arange(n_prompts).repeat_interleave(group_size),
        truncated=torch.tensor([e.truncated for e in episodes], dtype=torch.bool),
        extras={
            "episode_rewards": [e.reward for e in episodes],
            "turns": [len(e.actions) for e in episodes],
            "actions": [list(e.actions) for e in episodes],
            "transcripts": [transcript(e) for e in episodes],
            "episode_stats": {
                "turns_mean": float(sum(len(e.actions) for e in episodes) / max(1, len(episodes))),
                "env_token_frac": float(((n_total - n_policy).sum() / n_total.sum().clamp(min=1))),
                "env_errors": float(sum(e.env_errors for e in episodes)),
            },
        },
    )


def transcript(episode: Episode) -> str:
    """Actions and observations interleaved, for logs: `> action` lines, observations as is."""
    parts = []
    for i, action in enumerate(episode.actions):
        parts.append("> " + action)
        if i < len(episode.observations):
            parts.append(episode.observations[i].rstrip("\n"))
    return "\n".join(parts)
