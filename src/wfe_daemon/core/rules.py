"""When a node may run, and what status a run ends with. Pure.

The engine asks :func:`verdict` once a node's dependencies have all ended, and
:func:`run_status` once every node has; the store's ``abandon_run`` asks
:func:`run_status` too, so a run ends the same whichever of them ends it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

from wfe_daemon.core.model import NodeStatus, RunStatus, TriggerRule

FAILED_PREFIX = "dependency failed: "
"""How the reason of a node skipped because of a failure starts (the failed id follows)."""

_SUCCESS, _FAILED, _SKIPPED = NodeStatus.SUCCESS, NodeStatus.FAILED, NodeStatus.SKIPPED


class Outcome(Protocol):
    """What the rules read of an ended node."""

    @property
    def id(self) -> str: ...

    @property
    def status(self) -> NodeStatus: ...

    @property
    def cause(self) -> str | None:
        """For a node skipped because of a failure: the id of the node that failed."""


class Ended(NamedTuple):
    """A plain :class:`Outcome` (a stored node row, a test's case)."""

    id: str
    status: NodeStatus
    cause: str | None = None


class Skip(NamedTuple):
    """Why a node is skipped, and the failed node that caused it (``None``: no failure did)."""

    reason: str
    cause: str | None = None


def failed(node: Outcome) -> bool:
    """FAILED, or SKIPPED because something upstream failed."""
    return node.status is _FAILED or (node.status is _SKIPPED and node.cause is not None)


def verdict(rule: TriggerRule, deps: Sequence[Outcome]) -> Skip | None:
    """``None`` when a node with ``rule`` may run after ``deps`` ended, else why it is skipped."""
    if not deps or rule is TriggerRule.ALL_DONE:
        return None
    if rule is TriggerRule.ALL_SUCCESS and all(d.status is _SUCCESS for d in deps):
        return None  # the default rule met: no need to look for a failure
    first_failed = next((d for d in deps if failed(d)), None)
    if rule is TriggerRule.ONE_FAILED:
        return None if first_failed else Skip("trigger rule one_failed: no dependency failed")
    if rule is TriggerRule.ALL_FAILED:
        passed = next((d for d in deps if not failed(d)), None)
        return (
            None if passed is None else Skip(f"trigger rule all_failed: {passed.id} did not fail")
        )
    if _met(rule, deps, first_failed):
        return None
    if first_failed is not None:
        cause = first_failed.cause or first_failed.id
        return Skip(f"{FAILED_PREFIX}{cause}", cause)
    other = next(d for d in deps if d.status is not _SUCCESS)
    return Skip(f"dependency skipped: {other.id}")


def _met(rule: TriggerRule, deps: Sequence[Outcome], first_failed: Outcome | None) -> bool:
    """Whether ``one_success``, ``none_failed`` or ``all_success`` lets the node run."""
    if rule is TriggerRule.ONE_SUCCESS:
        return any(d.status is _SUCCESS for d in deps)
    if rule is TriggerRule.NONE_FAILED:
        return first_failed is None
    return all(d.status is _SUCCESS for d in deps)


def run_status(nodes: Iterable[Outcome], stopped: NodeStatus | None = None) -> RunStatus:
    """The status a run ends with, from its nodes' final states.

    ``stopped`` is the status its running nodes were ended with when the run was stopped
    early: CANCELLED (an operator) makes the run CANCELLED; FAILED (its deadline, or a run
    nobody will resume) keeps it from SUCCESS.
    """
    if stopped is NodeStatus.CANCELLED:
        return RunStatus.CANCELLED
    any_failed = any_succeeded = False
    for node in nodes:
        any_failed = any_failed or failed(node)
        any_succeeded = any_succeeded or node.status is _SUCCESS
    if not any_failed and stopped is None:
        return RunStatus.SUCCESS
    return RunStatus.PARTIAL_SUCCESS if any_succeeded else RunStatus.FAILED
