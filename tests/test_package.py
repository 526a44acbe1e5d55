"""The package as a user meets it: names at the top, optional extras that stay optional."""

import subprocess
import sys
import textwrap

import pytest

import engram
from engram.extras import require


def test_every_public_name_imports_from_the_top():
    for name in engram.__all__:
        value = getattr(engram, name)
        assert value.__name__ == name, name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        engram.Nope  # noqa: B018


def test_the_core_needs_no_server_language_model_or_statistics_package():
    probe = textwrap.dedent(
        """
        import sys
        import engram.ca3, engram.codes, engram.hebb, engram.replay, engram.streaming, engram.runs
        heavy = ("fastapi", "uvicorn", "tokenizers", "statsmodels", "faiss", "sentence_transformers", "mcp")
        print(sorted(name for name in heavy if name in sys.modules))
        """
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_a_missing_extra_names_what_installs_it(tmp_path, monkeypatch):
    with pytest.raises(ImportError, match=r"pip install 'engram\[lab\]'"):
        require("engram_no_such_module.sub", "lab")
    (tmp_path / "engram_broken_module.py").write_text("import engram_missing_inner\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # a module that exists but fails inside keeps its own error, not a wrong hint
    with pytest.raises(ModuleNotFoundError, match="engram_missing_inner"):
        require("engram_broken_module", "lab")
