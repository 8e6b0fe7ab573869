"""Tests for wfe_daemon.config: sources, precedence and one-line errors that name the key."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path

import pytest

from wfe_daemon.config import DEFAULTS, Settings, load_settings
from wfe_daemon.errors import ConfigError

REPO_TOML = Path(__file__).resolve().parents[1] / "config" / "wfe.toml"


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in an empty folder, so no config/wfe.toml is picked up by accident."""
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def config_error(**kwargs: object) -> str:
    """The message of the ConfigError that load_settings raises; it must be one line."""
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("config: ")
    return message


def test_defaults(tmp_path: Path) -> None:
    """With no file, environment or flags, every setting is the contract's default."""
    settings = load_settings(environ={})
    assert settings.inbox == tmp_path / "inbox"
    assert settings.outbox == tmp_path / "outbox"
    assert settings.db_path == tmp_path / "data" / "workflows.db"
    assert settings.data_dir == tmp_path / "data"
    assert settings.max_concurrent_tasks == 16
    assert settings.max_concurrent_workflows == 10
    assert dict(settings.task_limits) == {}
    assert settings.task_timeout == 300.0
    assert settings.max_workflow_duration == 3600.0
    assert settings.max_file_size == 10485760
    assert settings.shutdown_grace == 20.0
    assert settings.enable_shell is False
    assert settings.log_level == "INFO"
    assert settings.metrics_port == 0
    assert settings.history_retention_days == 0
    assert settings.http_deny_networks == ()
    assert settings == Settings()


def test_defaults_mapping_covers_every_field() -> None:
    """DEFAULTS names every Settings field and builds the default Settings."""
    assert list(DEFAULTS) == [f.name for f in dataclasses.fields(Settings)]
    assert Settings(**DEFAULTS) == load_settings(environ={})


def test_repository_toml_holds_every_key_at_its_default() -> None:
    """config/wfe.toml sets every key, and loading it changes nothing from the defaults."""
    with REPO_TOML.open("rb") as fp:
        document = tomllib.load(fp)
    assert set(document) == {f.name for f in dataclasses.fields(Settings)}
    assert load_settings(environ={}, toml_path=REPO_TOML) == load_settings(environ={})


def test_default_file_in_cwd_is_used(tmp_path: Path) -> None:
    """config/wfe.toml under the working directory is read when nothing else names a file."""
    write(tmp_path / "config" / "wfe.toml", "max_concurrent_tasks = 3\n")
    assert load_settings(environ={}).max_concurrent_tasks == 3


def test_toml_overrides_defaults(tmp_path: Path) -> None:
    """Keys in the TOML file replace the built-in defaults; others keep them."""
    path = write(tmp_path / "a.toml", 'task_timeout = 12\nlog_level = "debug"\n')
    settings = load_settings(environ={}, toml_path=path)
    assert settings.task_timeout == 12.0
    assert isinstance(settings.task_timeout, float)
    assert settings.log_level == "DEBUG"
    assert settings.max_concurrent_tasks == 16


def test_env_overrides_toml(tmp_path: Path) -> None:
    """A WFE_* variable wins over the TOML file."""
    path = write(tmp_path / "a.toml", "max_concurrent_tasks = 3\nmetrics_port = 9000\n")
    environ = {"WFE_MAX_CONCURRENT_TASKS": "5"}
    settings = load_settings(environ=environ, toml_path=path)
    assert settings.max_concurrent_tasks == 5
    assert settings.metrics_port == 9000


def test_flags_override_env(tmp_path: Path) -> None:
    """Flags win over the environment, whether typed or strings; None means not given."""
    environ = {"WFE_MAX_CONCURRENT_TASKS": "5", "WFE_SHUTDOWN_GRACE": "7"}
    flags = {"max_concurrent_tasks": 9, "shutdown_grace": "1.5", "log_level": None}
    settings = load_settings(flags=flags, environ=environ)
    assert settings.max_concurrent_tasks == 9
    assert settings.shutdown_grace == 1.5
    assert settings.log_level == "INFO"


def test_wfe_config_selects_file(tmp_path: Path) -> None:
    """$WFE_CONFIG names the TOML file when --config is absent, over config/wfe.toml."""
    write(tmp_path / "config" / "wfe.toml", "max_concurrent_tasks = 3\n")
    other = write(tmp_path / "other.toml", "max_concurrent_tasks = 4\n")
    assert load_settings(environ={"WFE_CONFIG": str(other)}).max_concurrent_tasks == 4


def test_config_argument_beats_wfe_config(tmp_path: Path) -> None:
    """The --config file is used even when $WFE_CONFIG names another."""
    chosen = write(tmp_path / "chosen.toml", "max_concurrent_tasks = 2\n")
    other = write(tmp_path / "other.toml", "max_concurrent_tasks = 4\n")
    settings = load_settings(environ={"WFE_CONFIG": str(other)}, toml_path=chosen)
    assert settings.max_concurrent_tasks == 2


def test_missing_config_file_errors(tmp_path: Path) -> None:
    """A --config file that does not exist is an error naming the file."""
    message = config_error(environ={}, toml_path=tmp_path / "nope.toml")
    assert "nope.toml" in message
    assert "cannot read file" in message


def test_missing_wfe_config_file_errors(tmp_path: Path) -> None:
    """A $WFE_CONFIG file that does not exist is an error too."""
    message = config_error(environ={"WFE_CONFIG": str(tmp_path / "gone.toml")})
    assert "gone.toml" in message


def test_unreadable_config_file_errors(tmp_path: Path) -> None:
    """A file that cannot be read (here a folder) is an error naming the file."""
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    assert "dir.toml: cannot read file" in config_error(environ={}, toml_path=folder)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_permission_denied_errors(tmp_path: Path) -> None:
    """A file without read permission is an error naming the file."""
    path = write(tmp_path / "secret.toml", "inbox = 'x'\n")
    path.chmod(0)
    assert "secret.toml: cannot read file" in config_error(environ={}, toml_path=path)


def test_bad_toml_syntax_errors(tmp_path: Path) -> None:
    """Invalid TOML is reported with the file and tomllib's message, on one line."""
    path = write(tmp_path / "bad.toml", "max_concurrent_tasks = = 3\n")
    message = config_error(environ={}, toml_path=path)
    assert f"config: {path}: invalid TOML: " in message
    assert "line 1" in message


def test_unknown_toml_key_suggests_closest(tmp_path: Path) -> None:
    """An unknown key is an error that suggests the closest known key."""
    path = write(tmp_path / "a.toml", "max_conccurent_tasks = 3\n")
    message = config_error(environ={}, toml_path=path)
    assert message == (
        f"config: {path}: unknown key 'max_conccurent_tasks' (did you mean 'max_concurrent_tasks'?)"
    )


def test_unknown_toml_key_without_suggestion(tmp_path: Path) -> None:
    """An unknown key far from every known key gets no suggestion."""
    path = write(tmp_path / "a.toml", "zzz = 1\n")
    assert config_error(environ={}, toml_path=path) == f"config: {path}: unknown key 'zzz'"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("max_concurrent_tasks = -3", "max_concurrent_tasks: must be >= 1, got -3"),
        ("max_concurrent_workflows = 0", "max_concurrent_workflows: must be >= 1, got 0"),
        ("task_timeout = 0", "task_timeout: must be > 0, got 0"),
        ("max_workflow_duration = -1.5", "max_workflow_duration: must be > 0, got -1.5"),
        ("max_file_size = 0", "max_file_size: must be >= 1, got 0"),
        ("shutdown_grace = -1", "shutdown_grace: must be >= 0, got -1"),
        ("metrics_port = 70000", "metrics_port: must be a port 0..65535 (0 = off), got 70000"),
        ("history_retention_days = -1", "history_retention_days: must be >= 0, got -1"),
        ("history_retention_days = 1.5", "history_retention_days: must be an integer, got 1.5"),
        ("max_concurrent_tasks = true", "max_concurrent_tasks: must be an integer, got True"),
        ('max_concurrent_tasks = "16"', "max_concurrent_tasks: must be an integer, got '16'"),
        ("max_file_size = 1.5", "max_file_size: must be an integer, got 1.5"),
        ("task_timeout = true", "task_timeout: must be a number, got True"),
        ("task_timeout = nan", "task_timeout: must be a number, got nan"),
        ('enable_shell = "yes"', "enable_shell: must be true or false, got 'yes'"),
        ("inbox = 3", "inbox: must be a non-empty path string, got 3"),
        ('inbox = ""', "inbox: must be a non-empty path string, got ''"),
        ('log_level = "loud"', "log_level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("task_limits = 5", "task_limits: must be a table of task type = limit, got 5"),
        ("[task_limits]\nhttp_get = 0", "task_limits.http_get: must be >= 1, got 0"),
        ('[task_limits]\nhttp_get = "8"', "task_limits.http_get: must be an integer, got '8'"),
        ('[task_limits]\n"" = 2', "task_limits: task types must be non-empty strings, got ''"),
        (
            'http_deny_networks = "loopback"',
            "http_deny_networks: must be a list of CIDR networks or names, got 'loopback'",
        ),
        (
            'http_deny_networks = ["10.0.0.0/33"]',
            "http_deny_networks: must be CIDR networks (like 10.0.0.0/8) or loopback, private,"
            " got '10.0.0.0/33'",
        ),
        ("http_deny_networks = [8]", "http_deny_networks: must be CIDR networks"),
    ],
)
def test_bad_toml_values_name_file_and_key(tmp_path: Path, line: str, expected: str) -> None:
    """Each wrong type or out-of-range value in the file names the file and the key."""
    path = write(tmp_path / "a.toml", line + "\n")
    assert config_error(environ={}, toml_path=path).startswith(f"config: {path}: {expected}")


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("WFE_MAX_CONCURRENT_TASKS", "abc", "must be an integer, got 'abc'"),
        ("WFE_MAX_CONCURRENT_TASKS", "-3", "must be >= 1, got -3"),
        ("WFE_TASK_TIMEOUT", "soon", "must be a number, got 'soon'"),
        ("WFE_TASK_TIMEOUT", "inf", "must be a number, got 'inf'"),
        ("WFE_ENABLE_SHELL", "maybe", "must be true or false, got 'maybe'"),
        ("WFE_LOG_LEVEL", "chatty", "must be one of DEBUG"),
        ("WFE_METRICS_PORT", "-1", "must be a port 0..65535"),
        ("WFE_HISTORY_RETENTION_DAYS", "a week", "must be an integer, got 'a week'"),
        ("WFE_INBOX", "", "must be a non-empty path string, got ''"),
        ("WFE_HTTP_DENY_NETWORKS", "loopback,intranet", "must be CIDR networks"),
    ],
)
def test_bad_env_values_name_the_variable(name: str, value: str, expected: str) -> None:
    """A bad environment value is an error naming the variable."""
    assert config_error(environ={name: value}).startswith(f"config: {name}: {expected}")


def test_bad_flag_value_names_the_flag() -> None:
    """A bad flag value is an error naming the flag as it is typed on the command line."""
    message = config_error(flags={"max_concurrent_tasks": -3}, environ={})
    assert message == "config: --max-concurrent-tasks: must be >= 1, got -3"


def test_every_key_with_a_variable_has_a_flag() -> None:
    """Flags cover every key the environment can set, and only those (not the tables)."""
    from wfe_daemon.config import FLAG_KEYS

    assert set(FLAG_KEYS) == set(DEFAULTS) - {"task_limits", "notify"}


def test_unknown_flag_errors() -> None:
    """A flag that is no setting is an error, with a suggestion."""
    message = config_error(flags={"log_levl": "DEBUG"}, environ={})
    assert message == "config: flags: unknown key 'log_levl' (did you mean 'log_level'?)"


def test_task_limits_parsed(tmp_path: Path) -> None:
    """The [task_limits] table becomes a read-only mapping of type to limit."""
    path = write(tmp_path / "a.toml", "[task_limits]\nhttp_get = 8\nshell = 1\n")
    limits = load_settings(environ={}, toml_path=path).task_limits
    assert dict(limits) == {"http_get": 8, "shell": 1}
    with pytest.raises(TypeError):
        limits["http_get"] = 9  # type: ignore[index]


def test_task_limits_flag_replaces_file_table(tmp_path: Path) -> None:
    """A task_limits flag replaces the file's table as a whole rather than merging."""
    path = write(tmp_path / "a.toml", "[task_limits]\nhttp_get = 8\n")
    settings = load_settings(flags={"task_limits": {"shell": "2"}}, environ={}, toml_path=path)
    assert dict(settings.task_limits) == {"shell": 2}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("On", True),
        ("false", False),
        ("0", False),
        ("no", False),
        (" OFF ", False),
    ],
)
def test_booleans_from_env(text: str, expected: bool) -> None:
    """WFE_ENABLE_SHELL accepts the usual spellings of true and false, in any case."""
    assert load_settings(environ={"WFE_ENABLE_SHELL": text}).enable_shell is expected


def test_env_numbers_parsed() -> None:
    """Integer and float variables are parsed from their text."""
    environ = {"WFE_MAX_FILE_SIZE": "2048", "WFE_TASK_TIMEOUT": "2.5", "WFE_METRICS_PORT": "9100"}
    settings = load_settings(environ=environ)
    assert settings.max_file_size == 2048
    assert settings.task_timeout == 2.5
    assert settings.metrics_port == 9100


def test_unrelated_env_vars_ignored() -> None:
    """Unknown WFE_* variables and other variables do not cause errors."""
    environ = {"WFE_NOT_A_SETTING": "x", "WFE_TASK_LIMITS": "junk", "WFE_CONFIG": "", "PATH": "/"}
    assert load_settings(environ=environ) == Settings()


def test_relative_paths_resolve_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative paths become absolute against the working directory, not the TOML file's folder."""
    path = write(tmp_path / "conf" / "a.toml", 'inbox = "in"\ndb_path = "../db/x.db"\n')
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    settings = load_settings(environ={"WFE_OUTBOX": "out"}, toml_path=path)
    assert settings.inbox == work / "in"
    assert settings.outbox == work / "out"
    assert settings.db_path == tmp_path / "db" / "x.db"
    assert all(p.is_absolute() for p in (settings.inbox, settings.data_dir))


def test_absolute_paths_kept(tmp_path: Path) -> None:
    """An absolute path is used as given."""
    target = tmp_path / "elsewhere" / "inbox"
    assert load_settings(environ={"WFE_INBOX": str(target)}).inbox == target


def test_settings_frozen_and_replaceable() -> None:
    """Settings cannot be changed in place, but dataclasses.replace makes a changed copy."""
    settings = load_settings(environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_concurrent_tasks = 1  # type: ignore[misc]
    changed = dataclasses.replace(settings, max_concurrent_tasks=1)
    assert changed.max_concurrent_tasks == 1
    assert changed.inbox == settings.inbox


def test_http_deny_networks_from_toml_and_env(tmp_path: Path) -> None:
    """http_deny_networks takes a TOML list or a comma-separated variable, normalised."""
    path = write(tmp_path / "a.toml", 'http_deny_networks = ["Loopback", "10.1.2.3/8", "::1"]\n')
    assert load_settings(environ={}, toml_path=path).http_deny_networks == (
        "loopback",
        "10.0.0.0/8",
        "::1/128",
    )
    environ = {"WFE_HTTP_DENY_NETWORKS": " private , 192.168.0.0/16,"}
    settings = load_settings(environ=environ, toml_path=path)
    assert settings.http_deny_networks == ("private", "192.168.0.0/16")
    assert load_settings(environ={"WFE_HTTP_DENY_NETWORKS": ""}).http_deny_networks == ()


def test_history_retention_days_from_toml_and_env(tmp_path: Path) -> None:
    """history_retention_days reads from the file, and WFE_HISTORY_RETENTION_DAYS overrides it."""
    path = write(tmp_path / "a.toml", "history_retention_days = 30\n")
    assert load_settings(environ={}, toml_path=path).history_retention_days == 30
    environ = {"WFE_HISTORY_RETENTION_DAYS": "7"}
    assert load_settings(environ=environ, toml_path=path).history_retention_days == 7


@pytest.mark.timeout(30)
def test_a_device_as_config_file_is_refused_not_read_forever(tmp_path: Path) -> None:
    """``--config /dev/zero`` fails at once naming the size bound, instead of reading on."""
    with pytest.raises(ConfigError, match=r"^config: /dev/zero: larger than 1048576 bytes$"):
        load_settings(flags={}, environ={}, toml_path=Path("/dev/zero"))


@pytest.mark.timeout(30)
def test_a_pipe_as_config_file_still_works(tmp_path: Path) -> None:
    """A config file given as a pipe (``--config <(...)``) is read to its end."""
    import threading

    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=("max_concurrent_tasks = 3\n",))
    writer.start()
    try:
        assert load_settings(flags={}, environ={}, toml_path=fifo).max_concurrent_tasks == 3
    finally:
        writer.join(10)
