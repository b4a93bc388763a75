import numpy as np
import pytest

from benchmarks.arithmetic.expression import Expression, ExpressionError
from benchmarks.arithmetic.tasks import Numbers, encode, split_pairs, transfer_pairs

A, B = np.meshgrid(np.arange(60), np.arange(60), indexing="ij")
A, B = A.ravel(), B.ravel()


@pytest.mark.parametrize(
    "text, reference",
    [
        ("a+ab", lambda a, b: a + a * b),
        ("a+a*b", lambda a, b: a + a * b),
        ("a^2+a*b", lambda a, b: a**2 + a * b),
        ("a^2-b^2", lambda a, b: a**2 - b**2),
        ("a*b", lambda a, b: a * b),
        ("a^3+ab", lambda a, b: a**3 + a * b),
        ("a^2+ab+b^2", lambda a, b: a**2 + a * b + b**2),
        ("-a^2 + 3(a - b)", lambda a, b: -(a**2) + 3 * (a - b)),
        ("a**2 + b**2", lambda a, b: a**2 + b**2),
    ],
)
def test_expressions_match_python_arithmetic(text, reference):
    for p in (7, 11):
        got = Expression(text, p)(A, B)
        assert np.array_equal(got, np.mod(reference(A, B), p)), (text, p)
        assert got.min() >= 0 and got.max() < p


@pytest.mark.parametrize("bad", ["a^^2", "a+", "c+a", "a^b", "", "(a+b", "a)", "import os"])
def test_bad_expressions_are_one_line_errors(bad):
    with pytest.raises(ExpressionError) as info:
        Expression(bad, 7)
    assert "\n" not in str(info.value) and "bad expression" in str(info.value)


def test_encode_rows():
    nums = Numbers(10, 7)
    rows = encode(nums, Expression("a+ab", 7), np.array([3 * 10 + 4, 9 * 10 + 9]))
    assert rows.tolist() == [[3, 4, 10, (3 + 12) % 7], [9, 9, 10, (9 + 81) % 7]]


def test_split_pairs_cover_every_number_and_are_disjoint():
    nums = Numbers(50, 7)
    splits = split_pairs(nums, {"train": 300, "val": 200, "test": 200}, seed=0)
    a, b = np.divmod(splits["train"], 50)
    assert set(a) == set(range(50)) and set(b) == set(range(50))
    assert len(set(splits["train"])) == 300
    sets = [set(v.tolist()) for v in splits.values()]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    again = split_pairs(nums, {"train": 300, "val": 200, "test": 200}, seed=0)
    assert all(np.array_equal(splits[k], again[k]) for k in splits)


def test_split_pairs_errors():
    with pytest.raises(ValueError, match="at least max_number"):
        split_pairs(Numbers(50, 7), {"train": 10}, seed=0)
    with pytest.raises(ValueError, match="cannot draw"):
        split_pairs(Numbers(10, 7), {"train": 90, "val": 20}, seed=0)


def test_transfer_pairs_ambiguous_set_nested_and_disjoint_evaluation():
    nums = Numbers(40, 7)
    small = transfer_pairs(nums, 10, eval_size=100, seed=3)
    big = transfer_pairs(nums, 200, eval_size=100, seed=3)
    diagonal = set((np.arange(40) * 41).tolist())
    assert diagonal <= set(small["train"].tolist())
    assert len(small["train"]) == 40 + 10 and len(big["train"]) == 40 + 200
    assert set(small["train"].tolist()) <= set(big["train"].tolist())  # nested in n
    assert np.array_equal(small["val"], big["val"]) and np.array_equal(small["test"], big["test"])
    for s in (small, big):
        train = set(s["train"].tolist())
        assert not train & set(s["val"].tolist()) and not train & set(s["test"].tolist())
        assert not set(s["val"].tolist()) & set(s["test"].tolist())
    with pytest.raises(ValueError, match="exceeds"):
        transfer_pairs(nums, 10_000, eval_size=100, seed=3)
