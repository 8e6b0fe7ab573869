"""The task registry: the built-ins' params schemas, and what checking params costs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from jsonschema.validators import validator_for

from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.tasks import BUILTINS


@pytest.mark.parametrize("task_class", BUILTINS, ids=lambda task_class: task_class.type)
def test_every_builtin_params_schema_is_a_valid_json_schema(task_class: type) -> None:
    """Each built-in's ``params_schema`` meets its metaschema (checked here, not at start)."""
    schema = task_class.params_schema  # type: ignore[attr-defined]
    validator_for(schema).check_schema(schema)


def test_params_of_a_type_that_takes_any_object_are_checked_without_jsonschema() -> None:
    """Loading the registry and checking ``echo`` params leaves jsonschema unimported (it
    costs about 50 ms at start); a type with a real schema still gets its problems."""
    code = (
        "import sys\n"
        "from wfe_daemon.runtime.registry import TaskRegistry\n"
        "from wfe_daemon.tasks import BUILTINS\n"
        "registry = TaskRegistry.load(BUILTINS)\n"
        "assert registry.check_params('echo', {'v': [1, {'w': '{{ a.b }}'}]}) == []\n"
        "print('jsonschema' in sys.modules)\n"
        "print(registry.check_params('sleep', {'seconds': -1}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout == "False\n['seconds: -1 is less than the minimum of 0']\n"


def test_a_type_with_any_object_schema_still_runs_its_own_params_check() -> None:
    """A schema that takes any object skips jsonschema, not the task's ``validate_params``."""

    class Picky:
        type = "picky"
        display_name = "Picky"
        description = "Wants ``x``."
        category = "test"
        params_schema = {"type": "object"}  # noqa: RUF012 - a Task's class attribute
        default_timeout = None

        async def execute(self, params: object, ctx: object) -> object:
            return params

        def validate_params(self, params: dict[str, object], *, resolved: bool) -> list[str]:
            return [] if "x" in params else ["x: required"]

    registry = TaskRegistry([Picky()])  # type: ignore[list-item]

    assert registry.check_params("picky", {}) == ["x: required"]
    assert registry.check_params("picky", {"x": 1}) == []
