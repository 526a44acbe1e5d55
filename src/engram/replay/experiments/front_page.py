"""The claims table that opens docs/continual/README.md, rendered by the toolkit from claims.toml.

Each claim is a figure measured and recorded in the notes, with the config that reproduces
its run; ``python -m engram.replay.experiments.front_page`` prints the table.
"""

from __future__ import annotations

import sys
from pathlib import Path

from engram.errors import ConfigError
from engram.runs import Claim
from engram.runs.report import front_page_table

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[4]
CLAIMS = ROOT / "docs" / "continual" / "claims.toml"
CONFIGS = ROOT / "configs" / "replay"
_FIELDS = ("statement", "source", "measured", "value", "target", "verdict", "conditions")


def read_claims(path: Path = CLAIMS) -> list[tuple[Claim, str]]:
    """Each claim of ``path`` with its reproducing command; a claim's config must exist."""
    entries = tomllib.loads(path.read_text(encoding="utf-8")).get("claim", [])
    out = []
    for i, entry in enumerate(entries):
        config = CONFIGS / f"{entry.get('config', '')}.toml"
        if not config.is_file():
            raise ConfigError(f"{path}: claim {i}: config {config} does not exist")
        claim = Claim(**{k: entry[k] for k in _FIELDS if k in entry})
        out.append((claim, f"engram run --config {config.relative_to(ROOT)}"))
    return out


def table(path: Path = CLAIMS) -> str:
    """The toolkit's one-screen claims table, one reproducing command per row."""
    rows = read_claims(path)
    return front_page_table([c for c, _ in rows], [cmd for _, cmd in rows])


if __name__ == "__main__":
    sys.stdout.write(table())
