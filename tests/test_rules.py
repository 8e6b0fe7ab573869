"""Tests for the pure rules of wfe_daemon.core.rules: trigger-rule verdicts and run status."""

from __future__ import annotations

import pytest

from wfe_daemon.core.model import NodeStatus, RunStatus, TriggerRule
from wfe_daemon.core.rules import Ended, Skip, failed, run_status, verdict

SUCCESS, FAILED, SKIPPED = NodeStatus.SUCCESS, NodeStatus.FAILED, NodeStatus.SKIPPED
CANCELLED, PENDING = NodeStatus.CANCELLED, NodeStatus.PENDING

# The dependencies a node waited for, by case: each (id, status, cause).
CASES: dict[str, list[Ended]] = {
    "all ok": [Ended("a", SUCCESS), Ended("b", SUCCESS)],
    "one failed": [Ended("a", SUCCESS), Ended("b", FAILED)],
    "all failed": [Ended("a", FAILED), Ended("b", FAILED)],
    "failed upstream": [Ended("a", SUCCESS), Ended("b", SKIPPED, "x")],
    "skipped": [Ended("a", SUCCESS), Ended("b", SKIPPED)],
    "nothing ran": [Ended("a", SKIPPED), Ended("b", CANCELLED)],
}

NOT_ONE_FAILED = Skip("trigger rule one_failed: no dependency failed")


def _all_failed_skip(passed: str) -> Skip:
    return Skip(f"trigger rule all_failed: {passed} did not fail")


VERDICTS = [
    (TriggerRule.ALL_SUCCESS, "all ok", None),
    (TriggerRule.ALL_SUCCESS, "one failed", Skip("dependency failed: b", "b")),
    (TriggerRule.ALL_SUCCESS, "all failed", Skip("dependency failed: a", "a")),
    (TriggerRule.ALL_SUCCESS, "failed upstream", Skip("dependency failed: x", "x")),
    (TriggerRule.ALL_SUCCESS, "skipped", Skip("dependency skipped: b")),
    (TriggerRule.ALL_SUCCESS, "nothing ran", Skip("dependency skipped: a")),
    (TriggerRule.ALL_DONE, "all ok", None),
    (TriggerRule.ALL_DONE, "one failed", None),
    (TriggerRule.ALL_DONE, "all failed", None),
    (TriggerRule.ALL_DONE, "failed upstream", None),
    (TriggerRule.ALL_DONE, "skipped", None),
    (TriggerRule.ALL_DONE, "nothing ran", None),
    (TriggerRule.ALL_FAILED, "all ok", _all_failed_skip("a")),
    (TriggerRule.ALL_FAILED, "one failed", _all_failed_skip("a")),
    (TriggerRule.ALL_FAILED, "all failed", None),
    (TriggerRule.ALL_FAILED, "failed upstream", _all_failed_skip("a")),
    (TriggerRule.ALL_FAILED, "skipped", _all_failed_skip("a")),
    (TriggerRule.ALL_FAILED, "nothing ran", _all_failed_skip("a")),
    (TriggerRule.ONE_SUCCESS, "all ok", None),
    (TriggerRule.ONE_SUCCESS, "one failed", None),
    (TriggerRule.ONE_SUCCESS, "all failed", Skip("dependency failed: a", "a")),
    (TriggerRule.ONE_SUCCESS, "failed upstream", None),
    (TriggerRule.ONE_SUCCESS, "skipped", None),
    (TriggerRule.ONE_SUCCESS, "nothing ran", Skip("dependency skipped: a")),
    (TriggerRule.ONE_FAILED, "all ok", NOT_ONE_FAILED),
    (TriggerRule.ONE_FAILED, "one failed", None),
    (TriggerRule.ONE_FAILED, "all failed", None),
    (TriggerRule.ONE_FAILED, "failed upstream", None),
    (TriggerRule.ONE_FAILED, "skipped", NOT_ONE_FAILED),
    (TriggerRule.ONE_FAILED, "nothing ran", NOT_ONE_FAILED),
    (TriggerRule.NONE_FAILED, "all ok", None),
    (TriggerRule.NONE_FAILED, "one failed", Skip("dependency failed: b", "b")),
    (TriggerRule.NONE_FAILED, "all failed", Skip("dependency failed: a", "a")),
    (TriggerRule.NONE_FAILED, "failed upstream", Skip("dependency failed: x", "x")),
    (TriggerRule.NONE_FAILED, "skipped", None),
    (TriggerRule.NONE_FAILED, "nothing ran", None),
]


def test_the_verdict_table_covers_every_rule_and_case() -> None:
    """Each trigger rule has one row for each case of dependencies."""
    assert {(rule, case) for rule, case, _ in VERDICTS} == {
        (rule, case) for rule in TriggerRule for case in CASES
    }
    assert len(VERDICTS) == len(TriggerRule) * len(CASES)


@pytest.mark.parametrize(
    ("rule", "case", "expected"), VERDICTS, ids=[f"{r}-{c}" for r, c, _ in VERDICTS]
)
def test_verdict(rule: TriggerRule, case: str, expected: Skip | None) -> None:
    """A node runs (``None``) or is skipped with its reason and cause, as its rule says."""
    assert verdict(rule, CASES[case]) == expected


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_a_node_without_dependencies_always_runs(rule: TriggerRule) -> None:
    """With nothing to wait for, every rule lets the node run."""
    assert verdict(rule, []) is None


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (Ended("a", FAILED), True),
        (Ended("a", SKIPPED, "x"), True),
        (Ended("a", SKIPPED), False),
        (Ended("a", SUCCESS), False),
        (Ended("a", CANCELLED), False),
    ],
)
def test_failed_counts_a_skip_caused_by_a_failure(node: Ended, expected: bool) -> None:
    """FAILED and a skip caused by a failure count as failed; other skips do not."""
    assert failed(node) is expected


STATUSES = [
    ("nothing", [], None, RunStatus.SUCCESS),
    ("all ok", [Ended("a", SUCCESS)], None, RunStatus.SUCCESS),
    ("ok and failed", [Ended("a", SUCCESS), Ended("b", FAILED)], None, RunStatus.PARTIAL_SUCCESS),
    ("failed only", [Ended("a", FAILED), Ended("b", SKIPPED, "a")], None, RunStatus.FAILED),
    ("rule never fired", [Ended("a", SUCCESS), Ended("b", SKIPPED)], None, RunStatus.SUCCESS),
    ("skip by failure", [Ended("a", SUCCESS), Ended("b", SKIPPED, "x")], None, "PARTIAL_SUCCESS"),
    ("stopped after ok", [Ended("a", SUCCESS), Ended("b", SKIPPED)], FAILED, "PARTIAL_SUCCESS"),
    ("stopped before ok", [Ended("a", FAILED), Ended("b", PENDING)], FAILED, RunStatus.FAILED),
    ("stopped, none ran", [Ended("a", SKIPPED)], FAILED, RunStatus.FAILED),
    ("cancelled after ok", [Ended("a", SUCCESS)], CANCELLED, RunStatus.CANCELLED),
    ("cancelled, failed", [Ended("a", FAILED)], CANCELLED, RunStatus.CANCELLED),
]


@pytest.mark.parametrize(
    ("nodes", "stopped", "expected"),
    [row[1:] for row in STATUSES],
    ids=[row[0] for row in STATUSES],
)
def test_run_status(nodes: list[Ended], stopped: NodeStatus | None, expected: str) -> None:
    """A run ends SUCCESS, PARTIAL_SUCCESS, FAILED or CANCELLED from its nodes and its stop."""
    assert run_status(nodes, stopped) == expected
