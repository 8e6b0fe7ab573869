"""Incidents: one line when a fault begins, one when it heals, a count in between."""

from __future__ import annotations

from structlog.testing import capture_logs

from wfe_daemon.faults import FAULT_BEGUN, FAULT_HEALED, Backoff, Faults


def test_an_incident_logs_once_when_it_begins_and_once_when_it_heals() -> None:
    """Three failures and a success give two warnings, the second with the count."""
    faults = Faults()
    with capture_logs() as logs:
        for _ in range(3):
            faults["outbox"].failed("No space left on device", folder="/out")
        assert faults.active() == {"outbox": "No space left on device (3 failed attempts)"}
        faults["outbox"].healed()
        faults["outbox"].healed()  # nothing open: silent
    assert [(e["event"], e["log_level"]) for e in logs] == [
        (FAULT_BEGUN, "warning"),
        (FAULT_HEALED, "warning"),
    ]
    assert logs[0]["folder"] == "/out" and logs[0]["fault"] == "outbox"
    assert logs[1]["failures"] == 3
    assert faults.active() == {}


def test_a_new_incident_after_a_heal_is_logged_again() -> None:
    """Each incident is logged: a fault that comes back after healing begins anew."""
    faults = Faults()
    with capture_logs() as logs:
        faults["store"].failed("database is locked")
        faults["store"].healed()
        faults["store"].failed("disk I/O error")
    assert [e["event"] for e in logs] == [FAULT_BEGUN, FAULT_HEALED, FAULT_BEGUN]
    assert faults.active() == {"store": "disk I/O error (1 failed attempts)"}


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    """Delays double from the first up to the cap; a reset starts over."""
    backoff = Backoff(first_s=0.1, max_s=0.5)
    assert [backoff.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.next() == 0.1
