from __future__ import annotations

from wfe_daemon.cli import main

raise SystemExit(main())
