"""The HippocampalTransformer language model: hippocampal codes, episodic memory, training,
sampling and evaluation, judged against the plain GPT it becomes with every part off."""

from engram.lm.model import (
    PARTS,
    HippocampalTransformer,
    HippocampalTransformerConfig,
    KVCache,
    LMOutput,
)

__all__ = ["PARTS", "HippocampalTransformer", "HippocampalTransformerConfig", "KVCache", "LMOutput"]
