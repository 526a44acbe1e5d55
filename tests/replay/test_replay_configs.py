"""Every continual run reported in docs/continual is a config file that loads; quick forms run
and regenerate their numbers bit for bit from the config and its seed."""

import json
from pathlib import Path

import pytest

from engram.runs import quick_config, read_config_file, resolve, start

# The replay.continual configs (the part's other experiments, mammoth and vandeven, test their own).
CONFIGS = sorted(p for p in (Path(__file__).parents[2] / "configs" / "replay").glob("*.toml")
                 if read_config_file(p).experiment == "replay.continual")


def test_there_is_a_config_per_documented_run():
    assert len(CONFIGS) == 30
    described = " ".join(read_config_file(p).description for p in CONFIGS)
    for figure in ("93.3 [92.7, 93.9]", "96.49 [96.44, 96.54]", "99.69 [99.60, 99.78]",
                   "95.11 [94.56, 95.66]", "96.5 [96.1, 96.9]", "93.8 [92.3, 95.2]"):
        assert figure in described


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_each_config_loads_as_the_continual_experiment(path):
    exp, cfg = resolve("", config_file=path)
    assert exp.name == "replay.continual" and cfg.arms()
    _, quick = quick_config(path)
    assert quick.n_seeds == 1 and quick.learner.iters < cfg.learner.iters
    assert quick.benchmark == cfg.benchmark and quick.arms().keys() == cfg.arms().keys()


def per_seed(folder):
    rows = json.loads((folder.path / "results.json").read_text())["tables"]["per_seed"]
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


def test_a_quick_form_regenerates_bit_for_bit_from_the_config_and_seed(tmp_path):
    # tests/runs/test_configs.py runs every quick form once; here one runs twice.
    exp, cfg = quick_config(CONFIGS[[p.stem for p in CONFIGS].index("split_digits_pair")])
    first, _ = start(exp, cfg, tmp_path / "a")
    second, _ = start(exp, cfg, tmp_path / "b")
    assert per_seed(first) == per_seed(second)
    assert len(per_seed(first)) == len(cfg.arms())
