"""The complexity bound that tests use instead of seconds (``tests/scaling.py``) can fail."""

from __future__ import annotations

from collections.abc import Callable

from scaling import FACTOR, LINEAR, growth


def _pairs(n: int) -> Callable[[], int]:
    """Work that visits every pair of ``n`` items: quadratic."""
    items = range(n)
    return lambda: sum(1 for i in items for j in items if i <= j)


def _items(n: int) -> Callable[[], int]:
    """Work that visits each of ``n`` items once: linear."""
    items = range(n)
    return lambda: sum(1 for i in items if i >= 0)


def test_quadratic_work_exceeds_the_linear_bound() -> None:
    """Work over every pair grows well past LINEAR, so a quadratic regression fails a test."""
    assert growth(_pairs, 40, repeats=1) > LINEAR  # about 64: one sample is plenty


def test_linear_work_stays_within_the_bound() -> None:
    """Work over each item once grows about FACTOR times, within LINEAR."""
    assert growth(_items, 20_000) <= LINEAR
    assert LINEAR < FACTOR**2 / 2  # room below quadratic as well as above linear
