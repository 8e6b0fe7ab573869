"""wfe-daemon: a lightweight workflow engine that runs DAGs of tasks dropped into a folder."""

from __future__ import annotations

__version__ = "0.1.0"
