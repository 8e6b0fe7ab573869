"""The built-in task types, one module per family."""

from __future__ import annotations

from wfe_daemon.tasks.basic import EchoTask, SleepTask

BUILTINS = (EchoTask, SleepTask)

__all__ = ["BUILTINS", "EchoTask", "SleepTask"]
