"""docs/continual opens with the published protocols' tables and the verdict, then the claims
table the toolkit renders from claims.toml; every figure in that table is one recorded in the
notes, and every claim names a config that exists."""

import re
from pathlib import Path

import pytest

from engram.errors import ConfigError
from engram.replay.experiments.front_page import CLAIMS, read_claims, table

DOCS = Path(__file__).parents[2] / "docs" / "continual"


def test_readme_opens_with_the_protocol_tables_then_the_generated_claims_table():
    readme = (DOCS / "README.md").read_text()
    begin, end = readme.index("<!-- claims:begin"), readme.index("<!-- claims:end -->")
    assert readme[readme.index("\n", begin) + 1 : end] == table()
    first_screen = readme[: readme.index("## In Engram's own protocol")]
    for marker in ("mammoth_seq_mnist.toml", "vandeven_<scenario>_reduced.toml", "**Verdict.**"):
        assert marker in first_screen, marker
    assert len(first_screen.splitlines()) < 60


def test_every_measured_figure_is_one_the_notes_record():
    notes = (DOCS / "notes.md").read_text()
    for claim, command in read_claims():
        for number in re.findall(r"\d+\.\d+", claim.measured):
            assert number in notes, (claim.statement, number)
        assert command.startswith("engram run --config configs/replay/")


def test_a_claim_without_its_config_is_refused(tmp_path):
    bad = tmp_path / "claims.toml"
    bad.write_text(CLAIMS.read_text().replace('config = "split_digits_pair"',
                                              'config = "nowhere"'))
    with pytest.raises(ConfigError, match="nowhere"):
        read_claims(bad)
