"""HippocampalTransformer experiments: the ablation against the plain GPT."""

EXPERIMENTS = {"ablation": "engram.lm.experiments.ablation"}
EXPERIMENTS["sleep"] = "engram.lm.experiments.sleep"
EXPERIMENTS["controls"] = "engram.lm.experiments.controls"
EXPERIMENTS["longcontext"] = "engram.lm.experiments.longcontext"
