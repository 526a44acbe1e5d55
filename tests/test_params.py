"""Declared constraints: one wording for every violation, normalised values, both error bases."""

from __future__ import annotations

import numpy as np
import pytest

from engram.errors import EngramError
from engram.params import Instance, Interval, InvalidParameterError, Options, check, validated


@pytest.mark.parametrize(
    ("constraint", "value", "message"),
    [
        (Interval(int, 1, None), 0, "n: expected a positive integer, got 0"),
        (Interval(int, 1, None), (8, 0), r"n: expected a positive integer, got tuple \(8, 0\)"),
        (Interval(int, 1, None), True, "n: expected a positive integer, got bool True"),
        (Interval(int, 0, None), -1, "n: expected a non-negative integer, got -1"),
        (Interval(int, 2, None), 1, "n: expected an integer ≥ 2, got 1"),
        (Interval(int, 0, 10), 11, "n: expected an integer ≥ 0 and ≤ 10, got 11"),
        (Interval(float, 0, 1), 1.5, r"n: expected a value in \[0, 1\], got 1.5"),
        (Interval(float, 0, 1, closed="left", noun="fraction"), 1.0, r"a fraction in \[0, 1\), got 1.0"),
        (Interval(float, 0, 0.5, closed="right"), float("nan"), r"a value in \(0, 0.5\], got nan"),
        (Interval(float, 0, None, closed="neither"), 0.0, "n: expected a positive number, got 0.0"),
        (Interval(float, 0, 1), "0.5", "n: expected a value in .*, got str '0.5'"),
        (Options(("bipolar", "sparse")), "dense", "n: expected one of 'bipolar', 'sparse', got 'dense'"),
        (Options(("bipolar", "sparse")), 3, "n: expected one of 'bipolar', 'sparse', got int 3"),
        (Instance(dict, "a mapping"), [], r"n: expected a mapping, got list \[\]"),
    ],
)
def test_every_violation_names_the_argument_what_was_expected_and_what_came(constraint, value, message):
    with pytest.raises(InvalidParameterError, match=message):
        check("n", value, constraint)


def test_the_error_is_engrams_and_a_value_and_a_type_error():
    with pytest.raises(EngramError):
        check("n", 0, Interval(int, 1, None))
    for base in (ValueError, TypeError):
        with pytest.raises(base):
            check("n", "x", Interval(int, 1, None))


def test_values_come_back_as_plain_python_numbers():
    value = check("n", np.int64(3), Interval(int, 1, None))
    assert value == 3 and type(value) is int
    assert type(check("x", 1, Interval(float, 0, 2))) is float
    assert check("n", None, Interval(int, 1, None), None) is None


def test_several_constraints_read_as_alternatives():
    with pytest.raises(ValueError, match="n: expected a positive integer or None, got 0"):
        check("n", 0, Interval(int, 1, None), None)


def test_validated_checks_declared_arguments_and_passes_them_normalised():
    @validated({"n": [Interval(int, 1, None)], "code": [Options(("a", "b"))]})
    def make(n, *, code="a", free=None):
        return n, code, free

    assert make(np.int32(2), free=object) == (2, "a", object)
    assert type(make(np.int32(2))[0]) is int
    with pytest.raises(ValueError, match="code: expected one of 'a', 'b', got 'c'"):
        make(1, code="c")
    with pytest.raises(ValueError, match="n: expected a positive integer, got -3"):
        make(-3)


def test_a_spec_naming_no_such_argument_is_refused_at_declaration():
    with pytest.raises(ValueError, match=r"spec: \['m'\] are not arguments"):
        validated({"m": [None]})(lambda n: n)
