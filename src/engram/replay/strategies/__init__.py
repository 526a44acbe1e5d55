"""Continual-learning strategies for any ``nn.Module``: one small class each, one ``observe()``.

The loop is the caller's: ``before_experience(index, sample)``, then ``observe(inputs,
targets)`` per batch, then ``after_experience()``; test ``strategy.evaluated``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from engram.replay import EpisodicBuffer
    >>> from engram.replay.strategies import ExperienceReplay
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> learner = ExperienceReplay(model, EpisodicBuffer(50), replay_batch=8)
    >>> learner.before_experience(0)
    >>> loss = learner.observe(torch.rand(8, 4), torch.randint(3, (8,)))
    >>> len(learner.buffer)
    8
"""

from engram.replay.strategies.agem import AGEM
from engram.replay.strategies.base import (
    Strategy,
    adam,
    per_item_accuracy,
    per_item_cross_entropy,
)
from engram.replay.strategies.er_ace import ERACE
from engram.replay.strategies.ewc import OnlineEWC
from engram.replay.strategies.finetune import FineTune, Joint
from engram.replay.strategies.generative import GenerativeReplay
from engram.replay.strategies.lwf import LwF
from engram.replay.strategies.replay import ExperienceReplay
from engram.replay.strategies.si import SynapticIntelligence
from engram.replay.strategies.sleep_replay import SleepReplay

__all__ = [
    "AGEM",
    "ERACE",
    "ExperienceReplay",
    "FineTune",
    "GenerativeReplay",
    "Joint",
    "LwF",
    "OnlineEWC",
    "SleepReplay",
    "Strategy",
    "SynapticIntelligence",
    "adam",
    "per_item_accuracy",
    "per_item_cross_entropy",
]
