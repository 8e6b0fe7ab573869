"""The long-running service and what an operator asks of it: the daemon, intake of the
inbox, the outbox, submission, recovery, cancel, retry, retention, metrics and systemd; the
wiring of registry, services and engine; the file reader and the stop policy the commands
share."""
