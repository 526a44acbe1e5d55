"""Sleep for language models: the day's conversations kept by the hippocampus, consolidated
into the weights at night (prioritized, interleaved replay, dreams, context-frozen decision
tokens, optional EWC and APOLLO), resumable after a kill."""

from engram.lm.sleep.decision import IGNORE, decision_loss, token_loss
from engram.lm.sleep.episodes import Episode, Hippocampus, Layout, episodes_of, surprise
from engram.lm.sleep.night import NightConfig, NightReport, Sleep, build_optimizer
from engram.lm.sleep.probe import ProbeResult, probe
from engram.lm.sleep.signals import Scorer

__all__ = [
    "IGNORE", "Episode", "Hippocampus", "Layout", "NightConfig", "NightReport", "ProbeResult",
    "Scorer", "Sleep", "build_optimizer", "decision_loss", "episodes_of", "probe", "surprise",
    "token_loss",
]
