"""An example reward function for task=custom (README.md, "Worked example: your reward, your prompts").

    rlx-train task=custom task.reward_fn=examples/my_reward.py:reward task.prompts=examples/prompts.jsonl

rlx calls it once per sample as reward(prompt, completion, **fields), `fields` being the row's other
fields in the prompts file (here `answer`). It returns a float; one that raises or returns a
non-number scores 0 and is counted in `train/reward_errors`.
"""

from __future__ import annotations

import re

NUMBER = re.compile(r"-?\d+")


def reward(prompt: str, completion: str, answer: str | None = None, **fields) -> float:
    """1.0 for exactly the answer ("29"), 0.5 when the last integer in the completion is the answer
    ("14 + 15 = 29", "The answer is 29."), else 0.0."""
    if answer is None:
        return 0.0
    answer = str(answer).strip()
    if completion.strip().rstrip(".") == answer:
        return 1.0
    numbers = NUMBER.findall(completion)
    return 0.5 if numbers and numbers[-1] == answer else 0.0
