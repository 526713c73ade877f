"""``OLLAMA_TORCH_API_KEY`` / ``OLLAMA_TORCH_API_KEY_FILE`` on the real server process: the official clients
pass the key their own way (the ``ollama`` client in its headers, the OpenAI SDK as ``api_key``, the
Anthropic SDK as ``api_key`` = ``x-api-key`` or ``auth_token`` = bearer, the CLI from the environment);
every documented route but ``/``, ``HEAD /`` and ``/api/version`` refuses a missing or wrong key with a 401;
a key file that cannot be read stops the start."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import ollama
import openai
import pytest

from api import contract
from tests.e2e.conftest import upload_dir
from tests.server_process import ServerProcess, start_server

pytestmark = pytest.mark.slow

KEY = "test-key-7f3a"
OPEN = {("GET", "/"), ("HEAD", "/"), ("GET", "/api/version"), ("HEAD", "/api/version")}
ASK = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("api-key")
    key_file = root / "key"
    key_file.write_text(KEY + "\n")
    server = start_server(root / "models", root / "server.log", env={"OLLAMA_TORCH_API_KEY_FILE": str(key_file)})
    try:
        client = ollama.Client(host=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=300)
        client.create(model="tiny", files=upload_dir(client, tiny_llama_dir))
        yield server
    finally:
        server.stop()


def test_the_clients_pass_the_key(keyed: ServerProcess) -> None:
    native = ollama.Client(host=keyed.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=300)
    assert [m.model for m in native.list().models] == ["tiny:latest"]
    assert native.chat(model="tiny", messages=ASK, options={"num_predict": 2}).done
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=keyed.url).list()
    assert refused.value.status_code == 401 and "missing API key" in refused.value.error

    with openai.OpenAI(base_url=keyed.url + "/v1", api_key=KEY, max_retries=0) as oai:
        assert oai.chat.completions.create(model="tiny", messages=ASK, max_tokens=2).choices
        assert oai.responses.create(model="tiny", input="hi", max_output_tokens=2).output
    with openai.OpenAI(base_url=keyed.url + "/v1", api_key="wrong", max_retries=0) as oai, \
            pytest.raises(openai.AuthenticationError, match="invalid API key"):
        oai.models.list()

    for claude in (anthropic.Anthropic(base_url=keyed.url, api_key=KEY, max_retries=0),  # x-api-key
                   anthropic.Anthropic(base_url=keyed.url, auth_token=KEY, max_retries=0)):  # Authorization: Bearer
        with claude:
            assert claude.messages.create(model="tiny", max_tokens=2, messages=ASK).content is not None
            assert claude.messages.count_tokens(model="tiny", messages=ASK).input_tokens > 0
    with anthropic.Anthropic(base_url=keyed.url, api_key="wrong", max_retries=0) as claude, \
            pytest.raises(anthropic.AuthenticationError) as denied:
        claude.messages.create(model="tiny", max_tokens=2, messages=ASK)
    assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


def test_the_cli_sends_the_key_from_the_environment(keyed: ServerProcess) -> None:
    env = {**os.environ, "OLLAMA_HOST": keyed.url, "OLLAMA_TORCH_API_KEY": KEY}
    listed = subprocess.run([sys.executable, "-m", "ollama_torch", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "tiny:latest" in listed.stdout
    env["OLLAMA_TORCH_API_KEY"] = "wrong"
    refused = subprocess.run([sys.executable, "-m", "ollama_torch", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "invalid API key" in refused.stderr


def test_every_documented_route_refuses_a_missing_or_wrong_key(keyed: ServerProcess) -> None:
    checked = 0
    with httpx.Client(base_url=keyed.url, timeout=30) as http:
        for method, template in contract.operations():
            path = re.sub(r"\{[^}]+\}", "x", template)
            if (method, template) in OPEN:
                assert http.request(method, path).status_code == 200
                continue
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"x-api-key": "wrong"}, {"Authorization": f"Basic {KEY}"}):
                response = http.request(method, path, headers=headers, content=b"{}")
                assert response.status_code == 401, (method, path, headers)
                if method != "HEAD":
                    assert contract.error_message(contract.parse_body(401, response.headers["content-type"], response.content))
                    errors = contract.response_schema_errors(method, path, contract.parse_body(
                        401, response.headers["content-type"], response.content))
                    assert not errors, (method, path, errors)
            checked += 1
            assert http.request(method, path, headers={"Authorization": f"Bearer {KEY}"}, content=b"{}").status_code != 401
    assert checked >= 25


def test_an_unreadable_key_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="OLLAMA_TORCH_API_KEY_FILE: cannot read"):
        start_server(tmp_path / "models", tmp_path / "server.log", env={"OLLAMA_TORCH_API_KEY_FILE": str(tmp_path / "missing")})
