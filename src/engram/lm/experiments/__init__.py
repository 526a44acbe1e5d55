"""HippocampalTransformer experiments: the ablation against the plain GPT, the generic controls
for its codes, long context beyond the window, and sleep consolidation of told facts."""

EXPERIMENTS = {
    "ablation": "engram.lm.experiments.ablation",
    "controls": "engram.lm.experiments.controls",
    "longcontext": "engram.lm.experiments.longcontext",
    "sleep": "engram.lm.experiments.sleep",
}
