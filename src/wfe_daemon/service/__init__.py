"""The long-running service and its operations: the daemon, intake of the inbox, the outbox,
submission, recovery, cancel and retry, retention, metrics and systemd; the wiring of
registry, services and engine; the file reader and the stop policy the commands share."""
