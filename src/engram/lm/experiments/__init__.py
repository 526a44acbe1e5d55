"""HippocampalTransformer experiments: the ablation against the plain GPT."""

EXPERIMENTS = {"ablation": "engram.lm.experiments.ablation"}
EXPERIMENTS["longcontext"] = "engram.lm.experiments.longcontext"
