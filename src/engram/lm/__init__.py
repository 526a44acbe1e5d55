"""The HippocampalTransformer language model: hippocampal codes, episodic memory, training,
sampling and evaluation, judged against the plain GPT it becomes with every part off.

Example:
    >>> from engram.lm import HippocampalTransformer, HippocampalTransformerConfig
    >>> model = HippocampalTransformer(HippocampalTransformerConfig(parts=("grid", "time")))
    >>> plain = HippocampalTransformer(HippocampalTransformerConfig.plain_gpt())
"""

from engram.lm.evaluate import LossReport, memory_validation_loss, validation_loss
from engram.lm.memory import EpisodicMemory, Neighbours
from engram.lm.model import (
    PARTS,
    HippocampalTransformer,
    HippocampalTransformerConfig,
    KVCache,
    LMOutput,
)
from engram.lm.sample import Beam, SamplingConfig, complete, generate
from engram.lm.train import TrainConfig, TrainResult, model_from_checkpoint, train

__all__ = [
    "PARTS",
    "Beam",
    "EpisodicMemory",
    "HippocampalTransformer",
    "HippocampalTransformerConfig",
    "KVCache",
    "LMOutput",
    "LossReport",
    "Neighbours",
    "SamplingConfig",
    "TrainConfig",
    "TrainResult",
    "complete",
    "generate",
    "memory_validation_loss",
    "model_from_checkpoint",
    "train",
    "validation_loss",
]
