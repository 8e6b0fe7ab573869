"""What a secret's file may be: a regular file that is not one of the daemon's own
credentials, however it is reached. Each test runs a real daemon on real files."""

from __future__ import annotations

import os
from typing import Any

import pytest

from daemon_helpers import Daemons, drop, free_port, wait_result

OWN = (
    "names the secret '{name}', which is the daemon's own credential (the HTTP API's token"
    " or the [notify] webhook): workflows may not read it"
)


@pytest.mark.timeout(60)
def test_a_fifo_in_place_of_a_secret_fails_the_node_not_the_daemon(daemons: Daemons) -> None:
    """A secret's file replaced by a FIFO between validation and the node's start fails
    that node, saying it is not a regular file; the daemon goes on to the next run (the
    FIFO, which has no writer, never blocks it)."""
    secrets_dir = daemons.root / "secrets"
    secrets_dir.mkdir()
    secret = secrets_dir / "key"
    secret.write_text("fifo-test-value\n")
    daemons.start(WFE_SECRETS_DIR=str(secrets_dir), WFE_ENABLE_SHELL="1")
    swap = f"rm {secret} && mkfifo {secret}"
    doc: dict[str, Any] = {
        "name": "fifo",
        "nodes": [
            {"id": "swap", "type": "shell", "params": {"argv": ["sh", "-c", swap]}},
            {
                "id": "use",
                "type": "echo",
                "depends_on": ["swap"],
                "params": {"v": "{{ secrets.key }}"},
            },
        ],
    }
    drop(daemons.inbox, "fifo.json", doc)
    result = wait_result(daemons.outbox, "fifo", timeout=20)
    assert result["nodes"]["use"]["status"] == "FAILED"
    assert result["nodes"]["use"]["error"] == f"secret 'key': {secret} is not a regular file"
    drop(daemons.inbox, "after.json", {"name": "after", "nodes": [{"id": "a", "type": "echo"}]})
    assert wait_result(daemons.outbox, "after")["status"] == "SUCCESS"


def test_links_to_the_daemons_own_credentials_are_refused(daemons: Daemons) -> None:
    """A symbolic link and a hard link in ``secrets_dir`` to the API's token file, and a
    symbolic link to the ``[notify]`` URL file, all kept outside ``secrets_dir``, are
    refused by name at submission; a link swapped in after submission fails the node;
    neither value reaches an output."""
    secrets_dir = daemons.root / "secrets"
    secrets_dir.mkdir()
    private = daemons.root / "private"
    private.mkdir()
    token = private / "token"
    token.write_text("t0ken-0f-the-daemon-api\n")
    hook = private / "hook"
    hook.write_text("http://127.0.0.1:9/hook-0f-the-daemon\n")
    (secrets_dir / "soft").symlink_to(token)
    os.link(token, secrets_dir / "hard")
    (secrets_dir / "url").symlink_to(hook)
    (secrets_dir / "later").write_text("harmless-value\n")
    daemons.start(
        WFE_SECRETS_DIR=str(secrets_dir),
        WFE_HTTP_PORT=str(free_port()),
        WFE_API_TOKEN_FILE=str(token),
        WFE_NOTIFY_URL_FILE=str(hook),
        WFE_ENABLE_SHELL="1",
    )
    names = ("soft", "hard", "url")
    doc = {
        "name": "links",
        "nodes": [
            {"id": name, "type": "echo", "params": {"v": f"{{{{ secrets.{name} }}}}"}}
            for name in names
        ],
    }
    drop(daemons.inbox, "links.json", doc)
    rejected = wait_result(daemons.outbox, "links")
    assert rejected["status"] == "REJECTED"
    assert rejected["errors"] == [
        f"node '{name}': reference {{{{ secrets.{name} }}}} {OWN.format(name=name)}"
        for name in names
    ]
    later = secrets_dir / "later"
    swap = f"rm {later} && ln -s {token} {later}"
    doc = {
        "name": "swapped",
        "nodes": [
            {"id": "swap", "type": "shell", "params": {"argv": ["sh", "-c", swap]}},
            {
                "id": "use",
                "type": "echo",
                "depends_on": ["swap"],
                "params": {"v": "{{ secrets.later }}"},
            },
        ],
    }
    drop(daemons.inbox, "swapped.json", doc)
    result = wait_result(daemons.outbox, "swapped")
    assert result["nodes"]["use"]["status"] == "FAILED"
    assert result["nodes"]["use"]["error"] == OWN.format(name="later")
    for path in daemons.outbox.iterdir():
        if not path.name.startswith("."):  # a temporary may go while we look: its result stays
            assert b"t0ken-0f-the-daemon-api" not in path.read_bytes()


def test_many_nodes_reading_secrets_at_once_all_get_them(daemons: Daemons) -> None:
    """Twelve nodes started together, each reading the same three secrets (more names
    than the store's reader threads), all succeed with every value in their
    environments; a run after them reads a rotated value."""
    secrets_dir = daemons.root / "secrets"
    secrets_dir.mkdir()
    for name in ("alpha", "beta", "gamma"):
        (secrets_dir / name).write_text(f"{name}-value-0123\n")
    daemons.start(WFE_SECRETS_DIR=str(secrets_dir), WFE_ENABLE_SHELL="1")
    env = {name: f"{{{{ secrets.{name} }}}}" for name in ("alpha", "beta", "gamma")}
    check = 'test "$alpha$beta$gamma" = alpha-value-0123beta-value-0123gamma-value-0123'
    nodes = [
        {"id": f"n{i}", "type": "shell", "params": {"argv": ["sh", "-c", check], "env": env}}
        for i in range(12)
    ]
    drop(daemons.inbox, "many.json", {"name": "many", "nodes": nodes})
    result = wait_result(daemons.outbox, "many")
    assert result["status"] == "SUCCESS", {k: v.get("error") for k, v in result["nodes"].items()}
    (secrets_dir / "beta").write_text("beta-value-4567\n")
    argv = ["sh", "-c", 'test "$beta" = beta-value-4567']
    node = {"id": "e", "type": "shell", "params": {"argv": argv, "env": env}}
    drop(daemons.inbox, "after.json", {"name": "after", "nodes": [node]})
    assert wait_result(daemons.outbox, "after")["status"] == "SUCCESS"
