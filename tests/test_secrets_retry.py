"""A run that used secrets keeps their references in its stored definition, so it can be
retried (by ``wfe-daemon retry`` and by the API) after its inbox file is gone."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import Daemons, drop, free_port, get, query, wait_result, wait_until

SECRET = "r3try-S3cret-77d1"
TOKEN = "retry-t0ken"
REF = "{{ secrets.db_password }}"


def gated_doc(flag: Path) -> dict[str, Any]:
    """A workflow whose secret-using node waits on a gate that fails until ``flag`` exists."""
    return {
        "name": "gated",
        "nodes": [
            {"id": "gate", "type": "shell", "params": {"argv": ["test", "-e", str(flag)]}},
            {
                "id": "use",
                "type": "echo",
                "depends_on": ["gate"],
                "params": {
                    "password": REF,
                    "headers": {"Authorization": f"Bearer {REF}"},
                },
            },
        ],
    }


def retry_by_api(port: int, run_id: int) -> int:
    """POST the API's retry of ``run_id``; the new run's id."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/runs/{run_id}/retry",
        data=b"",
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(json.loads(response.read())["run_id"])


@pytest.mark.timeout(90)
def test_retry_of_a_run_using_secrets_after_its_file_is_gone(daemons: Daemons) -> None:
    """The stored definition shows ``{{ secrets.db_password }}`` and ``Bearer {{ ... }}``;
    with the inbox file deleted,
    ``wfe-daemon retry RUN`` and the API's retry both run the secret-using node, which
    gets the secret (masked in its output)."""
    secrets_dir = daemons.root / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "db_password").write_text(SECRET + "\n")
    flag = daemons.root / "open"
    port = free_port()
    env = {
        "WFE_SECRETS_DIR": str(secrets_dir),
        "WFE_ENABLE_SHELL": "1",
        "WFE_HTTP_PORT": str(port),
        "WFE_API_TOKEN": TOKEN,
    }
    daemon = daemons.start(**env)
    drop(daemons.inbox, "gated.json", gated_doc(flag))
    first = wait_result(daemons.outbox, "gated")
    assert first["status"] == "FAILED", first
    status, body = get(port, f"/api/v1/runs/{first['run_id']}/definition")
    assert status == 200
    params = json.loads(body)["nodes"][1]["params"]
    assert params["password"] == REF
    assert params["headers"] == {"Authorization": f"Bearer {REF}"}
    assert daemon.terminate() == 0
    for path in daemons.inbox.rglob("gated*.json"):
        path.unlink()
    flag.touch()

    done = subprocess.run(
        [sys.executable, "-m", "wfe_daemon", "retry", str(first["run_id"])],
        cwd=daemons.root,
        env=daemons.env(**env),
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    retried = json.loads(done.stdout)
    assert retried["status"] == "SUCCESS", retried
    assert retried["nodes"]["use"]["output"]["password"] == "***"
    assert retried["nodes"]["use"]["status"] == "SUCCESS"

    daemons.start(**env)
    run_id = retry_by_api(port, first["run_id"])

    def finished() -> dict[str, Any] | None:
        status, body = get(port, f"/api/v1/runs/{run_id}")
        run: dict[str, Any] = json.loads(body)
        return run if status == 200 and run["status"] != "RUNNING" else None

    run = wait_until(finished, 15, "the API's retry to finish")
    assert run["status"] == "SUCCESS", run
    for text in (done.stdout, json.dumps(run)):
        assert SECRET not in text


def test_a_literal_secret_beside_a_reference_is_still_redacted(
    run_cli: Any, write_workflow: Any, tmp_path: Path
) -> None:
    """In the stored definition a secret-named value keeps its references, alone or after
    a scheme word, but one with a literal password in it is ``***``."""
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "api").write_text(SECRET)
    headers = {
        "Authorization": "Bearer {{ secrets.api }}",
        "X-Api-Key": "hunter2-{{ secrets.api }}",
        "Proxy-Authorization": "Basic {{ secrets.api }}:{{ secrets.api }}",
        "password": "hunter2",
    }
    doc = {"name": "lit", "nodes": [{"id": "a", "type": "echo", "params": headers}]}
    done = run_cli("execute", write_workflow(doc), env={"WFE_SECRETS_DIR": str(secrets_dir)})
    assert done.returncode == 0, done.stderr
    rows = query(tmp_path / "data" / "wfe.db", "SELECT definition FROM workflowrun")
    stored = json.loads(rows[0]["definition"])["nodes"][0]["params"]
    assert stored == {
        "Authorization": "Bearer {{ secrets.api }}",
        "X-Api-Key": "***",
        "Proxy-Authorization": "Basic {{ secrets.api }}:{{ secrets.api }}",
        "password": "***",
    }
    assert SECRET not in done.stdout
