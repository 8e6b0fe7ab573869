"""Secrets: ``{{ secrets.NAME }}`` from ``secrets_dir`` (or systemd's
``$CREDENTIALS_DIRECTORY``), read when a node starts, and masked as ``***`` everywhere the
daemon writes: the database and its WAL, the outbox, the inbox, logs, the API, ``execute``.
Each test reads what a real daemon or command wrote, byte by byte."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from daemon_helpers import Daemons, cli, drop, free_port, get, wait_result, wait_running
from wfe_daemon.core.masking import MASKER, Masker
from wfe_daemon.logs import configure_logging

SECRET = "s3cr3t-Pa55-8c1f4e9b"
TOKEN = "secrets-t0ken"
REF = "{{ secrets.db_password }}"


def leaking_doc() -> dict[str, Any]:
    """A workflow whose every node would show the secret: in an output, a shell's stdout
    and stderr, a failing shell's error (retried, so logged), a param check's message,
    and a downstream copy of an output."""
    env = {"S": REF}
    return {
        "name": "leaky",
        "nodes": [
            {
                "id": "hold",
                "type": "echo",
                "params": {"dsn": f"postgres://app:{REF}@db/app", "whole": REF},
            },
            {
                "id": "print",
                "type": "shell",
                "params": {
                    "argv": ["sh", "-c", 'echo "token is $S"; echo "err $S" >&2'],
                    "env": env,
                },
            },
            {
                "id": "fail",
                "type": "shell",
                "retries": 1,
                "retry_delay": 0,
                "params": {"argv": ["sh", "-c", 'echo "bad password $S" >&2; exit 3'], "env": env},
            },
            {"id": "typed", "type": "sleep", "params": {"seconds": REF}},
            {
                "id": "copy",
                "type": "echo",
                "depends_on": ["hold"],
                "params": {"copied": "{{ hold.whole }}"},
            },
        ],
    }


def every_file(root: Path, skip: Path) -> Iterator[Path]:
    """Every regular file under ``root`` but those under ``skip`` (the secrets themselves)."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and skip not in path.parents:
            yield path


def assert_nowhere(root: Path, skip: Path, secret: str = SECRET) -> list[Path]:
    """No file under ``root`` holds ``secret``'s bytes; the files read."""
    read = list(every_file(root, skip))
    for path in read:
        assert secret.encode() not in path.read_bytes(), f"{path} holds the secret"
    return read


def make_secret(folder: Path, name: str, value: str) -> Path:
    """Write the secret ``name`` as systemd's LoadCredential= would: a file, one newline."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(value + "\n")
    return path


def api_answers(port: int, run_id: int, node_ids: list[str]) -> list[bytes]:
    """The API's answers about run ``run_id``: the list, the run, each node, the definition
    and the graph."""
    paths = [
        "/api/v1/runs",
        f"/api/v1/runs/{run_id}",
        f"/api/v1/runs/{run_id}/definition",
        f"/api/v1/runs/{run_id}/graph",
        *(f"/api/v1/runs/{run_id}/nodes/{node_id}" for node_id in node_ids),
    ]
    answers = []
    for path in paths:
        status, body = get(port, path)
        assert status == 200, (path, body)
        answers.append(body)
    return answers


@pytest.mark.timeout(90)
def test_a_secret_used_every_way_is_written_nowhere(daemons: Daemons) -> None:
    """A daemon with ``WFE_SECRETS_DIR`` runs nodes that output, print, fail with and copy
    a secret: its value is in no file it wrote (database, WAL, shm, outbox, inbox, logs),
    in no API answer and in no command's output, and ``***`` stands where it would be."""
    secrets_dir = daemons.root / "secrets"
    make_secret(secrets_dir, "db_password", SECRET)
    port = free_port()
    env = {
        "WFE_SECRETS_DIR": str(secrets_dir),
        "WFE_ENABLE_SHELL": "1",
        "WFE_HTTP_PORT": str(port),
        "WFE_API_TOKEN": TOKEN,
    }
    daemon = daemons.start(**env)
    drop(daemons.inbox, "leaky.json", leaking_doc())
    result = wait_result(daemons.outbox, "leaky")
    nodes = result["nodes"]
    assert result["status"] == "PARTIAL_SUCCESS"
    assert nodes["hold"]["output"] == {"dsn": "postgres://app:***@db/app", "whole": "***"}
    assert nodes["print"]["output"]["stdout"] == "token is ***\n"
    assert nodes["print"]["output"]["stderr"] == "err ***\n"
    assert (nodes["fail"]["status"], nodes["fail"]["attempts"]) == ("FAILED", 2)
    assert "bad password ***" in nodes["fail"]["error"]
    assert nodes["typed"]["status"] == "FAILED"
    assert "'***' is not of type 'number'" in nodes["typed"]["error"]
    assert nodes["copy"]["output"] == {"copied": "***"}
    answers = api_answers(port, result["run_id"], list(nodes))
    node_page = json.loads(answers[4])  # the first node's, "hold"
    assert node_page["params"] == {"dsn": "postgres://app:***@db/app", "whole": "***"}
    definition = json.loads(answers[2])
    assert definition["nodes"][0]["params"]["whole"] == REF
    shown = cli(daemons, "show", str(result["run_id"]), "--json", **env)
    assert shown.returncode == 0, shown.stderr
    listed = cli(daemons, "runs", **env)
    for text in (*answers, shown.stdout.encode(), listed.stdout.encode()):
        assert SECRET.encode() not in text
    assert any(event.get("event") == "node.retry" for event in daemon.events())
    read = assert_nowhere(daemons.root, secrets_dir)
    names = {path.name for path in read}
    assert {"wfe.db", "wfe.db-wal", "wfe.db-shm", "leaky.result.json", "leaky.json"} <= names
    assert "daemon0.out" in names
    assert daemon.terminate() == 0
    assert_nowhere(daemons.root, secrets_dir)


def test_credentials_directory_is_the_default_secrets_dir(daemons: Daemons) -> None:
    """Under systemd (``$CREDENTIALS_DIRECTORY`` set, no ``secrets_dir``) a credential is a
    secret, masked the same; the daemon's own credentials (the API token, the ``[notify]``
    webhook's URL file) are never served to a workflow."""
    credentials = daemons.root / "credentials"
    make_secret(credentials, "db_password", SECRET)
    make_secret(credentials, "api_token", "t0ken-0f-the-api")
    make_secret(credentials, "hook", "http://127.0.0.1:9/hook-0f-the-daemon")
    daemons.start(CREDENTIALS_DIRECTORY=str(credentials), WFE_NOTIFY_URL_FILE="hook")
    doc = {"name": "cred", "nodes": [{"id": "a", "type": "echo", "params": {"v": REF}}]}
    drop(daemons.inbox, "cred.json", doc)
    result = wait_result(daemons.outbox, "cred")
    assert result["nodes"]["a"]["output"] == {"v": "***"}
    token = {
        "name": "t",
        "nodes": [
            {"id": "a", "type": "echo", "params": {"v": "{{ secrets.api_token }}"}},
            {"id": "b", "type": "echo", "params": {"v": "{{ secrets.hook }}"}},
        ],
    }
    drop(daemons.inbox, "token.json", token)
    rejected = wait_result(daemons.outbox, "token")
    assert rejected["status"] == "REJECTED"
    assert rejected["errors"] == [
        "node 'a': reference {{ secrets.api_token }} names the secret 'api_token', which is"
        " the daemon's own credential (the HTTP API's token or the [notify] webhook):"
        " workflows may not read it",
        "node 'b': reference {{ secrets.hook }} names the secret 'hook', which is the daemon's"
        " own credential (the HTTP API's token or the [notify] webhook): workflows may not"
        " read it",
    ]
    assert_nowhere(daemons.root, credentials)


def test_a_missing_secret_rejects_the_file_naming_it(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    write_workflow: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """A reference to a secret that is not in ``secrets_dir`` is REJECTED naming it and the
    folder; with no ``secrets_dir`` at all, the message says how to configure one; a name
    that could leave the folder is refused as a name."""
    secrets_dir = tmp_path / "secrets"
    make_secret(secrets_dir, "present", SECRET)
    doc = {
        "name": "m",
        "nodes": [
            {
                "id": "a",
                "type": "echo",
                "params": {"v": "{{ secrets.absent }}", "w": "{{ secrets.present }}"},
            },
            {"id": "b", "type": "echo", "params": {"v": "{{ secrets./etc/passwd }}"}},
        ],
    }
    path = write_workflow(doc)
    done = run_cli("execute", path, env={"WFE_SECRETS_DIR": str(secrets_dir)})
    assert done.returncode == 2
    assert json.loads(done.stdout)["errors"] == [
        f"node 'a': reference {{{{ secrets.absent }}}} names the secret 'absent', which is not"
        f" in secrets_dir {secrets_dir}",
        "node 'b': reference {{ secrets./etc/passwd }} names '/etc/passwd', which is not a"
        " secret's"
        " name ([A-Za-z0-9_.-], no leading dot)",
    ]
    done = run_cli("validate", write_workflow({**doc, "nodes": doc["nodes"][:1]}))
    assert done.returncode == 2
    assert "no secrets_dir is configured: set secrets_dir (WFE_SECRETS_DIR)" in done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_execute_prints_and_logs_the_secret_masked(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    write_workflow: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """``execute`` shows ``***`` for the secret in the summary on stdout and in the log
    lines on stderr, and the database it wrote does not hold it."""
    secrets_dir = tmp_path / "secrets"
    make_secret(secrets_dir, "db_password", SECRET)
    doc = {
        "name": "x",
        "nodes": [
            {"id": "a", "type": "echo", "params": {"v": REF}},
            {"id": "b", "type": "sleep", "params": {"seconds": f"wait {REF}"}},
        ],
    }
    done = run_cli("execute", write_workflow(doc), env={"WFE_SECRETS_DIR": str(secrets_dir)})
    assert done.returncode == 1
    summary = json.loads(done.stdout)
    assert summary["nodes"]["a"]["output"] == {"v": "***"}
    assert "'wait ***' is not of type 'number'" in summary["nodes"]["b"]["error"]
    assert "wait ***" in done.stderr  # the node.finished line with the error
    assert SECRET not in done.stdout + done.stderr
    assert_nowhere(tmp_path, secrets_dir)


def test_a_secret_is_read_when_the_node_starts(daemons: Daemons) -> None:
    """A rotated secret file is used by the next run without a restart, and a file gone by
    the time its node starts fails that node (not the run's submission) saying why."""
    secrets_dir = daemons.root / "secrets"
    secret = make_secret(secrets_dir, "key", "first-value")
    daemons.start(WFE_SECRETS_DIR=str(secrets_dir), WFE_ENABLE_SHELL="1")

    def check(name: str, expected: str) -> dict[str, Any]:
        argv = ["sh", "-c", 'test "$S" = "$WANT"']
        params = {"argv": argv, "env": {"S": "{{ secrets.key }}", "WANT": expected}}
        drop(
            daemons.inbox,
            f"{name}.json",
            {"name": name, "nodes": [{"id": "c", "type": "shell", "params": params}]},
        )
        return wait_result(daemons.outbox, name)

    assert check("one", "first-value")["status"] == "SUCCESS"
    secret.write_text("second-value\n")
    assert check("two", "second-value")["status"] == "SUCCESS"
    assert check("three", "first-value")["status"] == "FAILED"
    doc = {
        "name": "late",
        "nodes": [
            {"id": "wait", "type": "sleep", "params": {"seconds": 1}},
            {
                "id": "use",
                "type": "echo",
                "depends_on": ["wait"],
                "params": {"v": "{{ secrets.key }}"},
            },
        ],
    }
    drop(daemons.inbox, "late.json", doc)
    wait_running(daemons.db_path, "wait")
    secret.unlink()
    result = wait_result(daemons.outbox, "late")
    assert result["nodes"]["use"]["status"] == "FAILED"
    assert result["nodes"]["use"]["error"] == (
        f"secret 'key': cannot read {secret}: No such file or directory"
    )


def test_the_masker_replaces_exact_values_lines_and_keys() -> None:
    """Every occurrence of a learned value is ``***`` (the longest first), each line of a
    multi-line value too, dict keys included; short values are not masked; what holds no
    secret is returned as it is."""
    masker = Masker()
    assert not masker
    assert masker.learn("abc") is False
    assert not masker
    assert masker.learn("BEGIN KEY\nline-one-xyz\nEND") is True
    assert masker.learn("line-one") is True
    assert masker.text("x line-one-xyz y line-one") == "x *** y ***"
    assert masker.text("BEGIN KEY\nline-one-xyz\nEND") == "***"
    assert masker.text("abc") == "abc"
    plain = {"a": [1, "b", {"c": None}]}
    assert masker.value(plain) is plain
    assert masker.value({"line-one": ["v line-one", 2]}) == {"***": ["v ***", 2]}
    masker.forget(["line-one"])
    assert masker.text("line-one") == "line-one"


def test_log_lines_mask_learned_values_in_every_field() -> None:
    """Once the process has read a secret, a log line shows it as ``***`` in any field,
    nested or not, the plain ones (``error``) included, and in an exception's text."""
    stream = io.StringIO()
    configure_logging("INFO", stream)
    MASKER.learn(SECRET)
    try:
        log = structlog.get_logger()
        log.warning("node.finished", error=f"failed: {SECRET}", extra={"deep": [SECRET]})
        try:
            raise ValueError(f"bad {SECRET}")
        except ValueError:
            log.exception("oops")
    finally:
        MASKER.forget([SECRET])
    text = stream.getvalue()
    assert SECRET not in text
    first, second = (json.loads(line) for line in text.splitlines())
    assert (first["error"], first["extra"]) == ("failed: ***", {"deep": ["***"]})
    assert "ValueError: bad ***" in second["exception"]


def test_log_lines_mask_a_value_json_would_escape() -> None:
    """A secret holding a quote and a newline (escaped in JSON text) is masked too, in
    the line as written: neither its raw nor its escaped form is there."""
    stream = io.StringIO()
    configure_logging("INFO", stream)
    odd = 'first "line"\nsecond-line'
    MASKER.learn(odd)
    try:
        structlog.get_logger().warning("node.finished", error=f"got {odd}!")
    finally:
        MASKER.forget(None)
    text = stream.getvalue()
    assert json.loads(text)["error"] == "got ***!"
    assert json.dumps(odd)[1:-1] not in text
    assert "second-line" not in text


def test_after_a_crash_a_masked_output_still_needed_is_produced_again(daemons: Daemons) -> None:
    """SIGKILL after ``a`` stored its output (masked) and while ``b`` runs: the restart runs
    ``a`` again, since ``c`` still needs the real value its stored ``***`` hides."""
    secrets_dir = daemons.root / "secrets"
    make_secret(secrets_dir, "db_password", SECRET)
    env = {"WFE_SECRETS_DIR": str(secrets_dir), "WFE_ENABLE_SHELL": "1"}
    first = daemons.start(**env)
    # The real value is 20 characters long, "***" is 3.
    check = {"argv": ["sh", "-c", f"test ${{#S}} -eq {len(SECRET)}"], "env": {"S": "{{ a.v }}"}}
    doc = {
        "name": "crash",
        "nodes": [
            {"id": "a", "type": "echo", "params": {"v": REF}},
            {"id": "b", "type": "sleep", "depends_on": ["a"], "params": {"seconds": 2}},
            {"id": "c", "type": "shell", "depends_on": ["b"], "params": check},
        ],
    }
    drop(daemons.inbox, "crash.json", doc)
    wait_running(daemons.db_path, "b")
    first.kill()
    second = daemons.start(**env)
    result = wait_result(daemons.outbox, "crash", timeout=20)
    assert result["status"] == "SUCCESS", result
    assert [e["node_id"] for e in second.events("node.started")] == ["a", "b", "c"]
    assert_nowhere(daemons.root, secrets_dir)


def test_a_secret_too_short_to_mask_is_used_and_reported(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    write_workflow: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """A secret of fewer than 4 characters is used as it is, not masked (it would hide
    every such word), and a ``secret.unmasked`` warning names it."""
    secrets_dir = tmp_path / "secrets"
    make_secret(secrets_dir, "pin", "417")
    doc = {
        "name": "pin",
        "nodes": [{"id": "a", "type": "echo", "params": {"v": "{{ secrets.pin }}"}}],
    }
    done = run_cli("execute", write_workflow(doc), env={"WFE_SECRETS_DIR": str(secrets_dir)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["nodes"]["a"]["output"] == {"v": "417"}
    warnings = [json.loads(line) for line in done.stderr.splitlines() if "secret.unmasked" in line]
    assert [(w["level"], w["name"]) for w in warnings] == [("warning", "pin")]


def test_secrets_dir_defaults_to_systemds_credentials(tmp_path: Path) -> None:
    """``$CREDENTIALS_DIRECTORY`` is ``secrets_dir`` when nothing sets one (the repository's
    wfe.toml, which leaves it ``""``, included); ``WFE_SECRETS_DIR`` wins over it."""
    from wfe_daemon.config import load_settings

    repo_toml = Path(__file__).parent.parent / "config" / "wfe.toml"
    credentials = {"CREDENTIALS_DIRECTORY": "/run/credentials/wfe-daemon.service"}
    assert load_settings(environ={}).secrets_dir is None
    for toml in (None, repo_toml):
        settings = load_settings(environ=credentials, toml_path=toml)
        assert settings.secrets_dir == Path("/run/credentials/wfe-daemon.service")
    mine = {**credentials, "WFE_SECRETS_DIR": str(tmp_path)}
    assert load_settings(environ=mine).secrets_dir == tmp_path


def test_a_secret_name_with_dots_is_one_name() -> None:
    """``{{ secrets.mysql.password }}`` names the secret ``mysql.password`` (a credential
    name may hold dots), where a node reference's dots walk into its output."""
    from wfe_daemon.core.refs import find_refs, resolve

    (ref,) = find_refs({"v": "{{ secrets.mysql.password }}"})
    assert (ref.node_id, ref.path) == ("secrets", ("mysql.password",))
    assert (
        resolve("pw={{ secrets.mysql.password }}", {"secrets": {"mysql.password": "x"}}) == "pw=x"
    )
    (ref,) = find_refs("{{ fetch.json.id }}")
    assert ref.path == ("json", "id")
