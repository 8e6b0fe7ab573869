from __future__ import annotations

from wfe_daemon.cli.commands import main

raise SystemExit(main())
