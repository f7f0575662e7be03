"""An offline "world of apps" for multi-turn tool use (contacts, calendar, notes, shop).

    rlx-train task=toolworld                 # level-1 tasks, warm-started base policy
    rlx-train task=toolworld task.levels=[2]

apps: the state and its tools; protocol: the JSON call format; generator: seeded tasks, checks
and experts; env: the environment and the task the trainer selects.
"""

from rlx.tasks.toolworld.env import ALPHABET, ToolWorldEnv, ToolWorldTask

__all__ = ["ALPHABET", "ToolWorldEnv", "ToolWorldTask"]
