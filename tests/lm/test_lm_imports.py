"""Dependencies stay where they belong: the attractor memories need no language-model package,
and the language model needs ``tokenizers`` only once a BPE tokenizer is built or loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import engram

SRC = str(Path(engram.__file__).resolve().parents[1])


def modules_after(statement: str) -> set[str]:
    """Top-level and engram modules loaded by ``statement`` in a fresh interpreter."""
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_importing_the_attractor_memories_loads_no_language_model_package():
    loaded = modules_after("import engram.ca3")
    assert "engram.ca3" in loaded
    assert not {"tokenizers", "engram.lm", "engram.data.text"} & loaded


def test_the_language_model_imports_tokenizers_only_for_bpe():
    loaded = modules_after("import engram.lm")
    assert {"engram.lm", "engram.lm.train", "engram.data.text"} <= loaded
    assert "tokenizers" not in loaded
