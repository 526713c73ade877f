"""Settings read from the environment with Ollama's names, defaults and parsing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ollama_torch.durations import parse_go_duration, parse_keep_alive
from ollama_torch.errors import BadRequest
from ollama_torch.settings import HostSetting, Settings, SettingsError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ("http", "127.0.0.1", 11434)),
        ("1.2.3.4", ("http", "1.2.3.4", 11434)),
        (":1234", ("http", "0.0.0.0", 1234)),
        ("1.2.3.4:1234", ("http", "1.2.3.4", 1234)),
        ("example.com", ("http", "example.com", 11434)),
        ("example.com:1234", ("http", "example.com", 1234)),
        ("0.0.0.0", ("http", "0.0.0.0", 11434)),
        ("[::1]:1234", ("http", "::1", 1234)),
        ("::1", ("http", "::1", 11434)),
        ("https://example.com", ("https", "example.com", 443)),
        ("http://example.com", ("http", "example.com", 80)),
        ("1.2.3.4:99999", ("http", "1.2.3.4", 11434)),
    ],
)
def test_host(text: str, expected: tuple[str, str, int]) -> None:
    h = HostSetting.parse(text)
    assert (h.scheme, h.host, h.port) == expected


def test_connect_host_for_unspecified() -> None:
    assert HostSetting.parse("0.0.0.0:5000").base_url == "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("1h30m", 5400), ("0", 0), ("-1m", -60), ("1.5s", 1.5), ("300ms", 0.3), ("2h45m30.5s", 9930.5)],
)
def test_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [("300", 'time: missing unit in duration "300"'), ("5x", 'time: unknown unit "x" in duration "5x"'), ("abc", 'time: invalid duration "abc"')],
)
def test_go_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_go_duration(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (0, 0.0), (30, 30.0), (1.5, 1.5), (-1, math.inf), ("5m", 300.0), ("-1s", math.inf), ("0s", 0.0)],
)
def test_keep_alive(value: object, expected: float | None) -> None:
    assert parse_keep_alive(value) == expected


@pytest.mark.parametrize("value", ["300", True, [1], {"a": 1}])
def test_keep_alive_errors(value: object) -> None:
    with pytest.raises(BadRequest):
        parse_keep_alive(value)


def test_from_env(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "OLLAMA_HOST": "127.0.0.1:5555",
            "OLLAMA_MODELS": str(tmp_path),
            "OLLAMA_KEEP_ALIVE": "'10m'",
            "OLLAMA_MAX_LOADED_MODELS": "2",
            "OLLAMA_NUM_PARALLEL": "4",
            "OLLAMA_MAX_QUEUE": "16",
            "OLLAMA_ORIGINS": "chrome-extension://*, https://x.org",
            "OLLAMA_NOPRUNE": "1",
        }
    )
    assert s.host.port == 5555 and s.models == tmp_path and s.keep_alive == 600
    assert s.effective_max_loaded_models == 2 and s.effective_num_parallel == 4 and s.max_queue == 16
    assert s.origins[:2] == ("chrome-extension://*", "https://x.org") and s.noprune


def test_compile_is_automatic_unless_turned_on_or_off(tmp_path: Path) -> None:
    def settings(value: str | None) -> Settings:
        return Settings.from_env({"OLLAMA_MODELS": str(tmp_path), **({"OLLAMA_TORCH_COMPILE": value} if value is not None else {})})

    for value, compile in ((None, None), ("", None), ("1", True), ("true", True), ("0", False), ("false", False)):
        assert settings(value).compile is compile, value
        assert settings(value).compile_dir == (None if compile is False else tmp_path / "compiled"), value
    assert Settings(models=tmp_path).compile is None


def test_env_keep_alive_seconds_and_negative() -> None:
    assert Settings.from_env({"OLLAMA_KEEP_ALIVE": "120"}).keep_alive == 120
    assert Settings.from_env({"OLLAMA_KEEP_ALIVE": "-1"}).keep_alive == math.inf
    assert Settings.from_env({}).keep_alive == 300


def test_api_key_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert Settings.from_env({}).api_key == ""
    assert Settings.from_env({"OLLAMA_TORCH_API_KEY": " s3cret "}).api_key == "s3cret"
    key_file = tmp_path / "key"
    key_file.write_text("from-a-file\n")
    assert Settings.from_env({"OLLAMA_TORCH_API_KEY_FILE": str(key_file)}).api_key == "from-a-file"
    assert "from-a-file" not in repr(Settings.from_env({"OLLAMA_TORCH_API_KEY_FILE": str(key_file)}))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OLLAMA_TORCH_API_KEY_FILE": "{missing}"}, "cannot read"),
        ({"OLLAMA_TORCH_API_KEY_FILE": "{empty}"}, "holds no key"),
        ({"OLLAMA_TORCH_API_KEY": "k", "OLLAMA_TORCH_API_KEY_FILE": "{empty}"}, "not both"),
    ],
)
def test_an_unusable_key_file_stops_the_start(tmp_path: Path, env: dict[str, str], message: str) -> None:
    """A server meant to be protected must not come up open."""
    (tmp_path / "empty").write_text(" \n")
    paths = {"missing": str(tmp_path / "nope"), "empty": str(tmp_path / "empty")}
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({k: v.format(**paths) for k, v in env.items()})
