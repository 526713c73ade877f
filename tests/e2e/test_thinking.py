"""Thinking models through the real server: a model whose template opens a reasoning block gets its output
in ``thinking`` (``message.thinking``), split from the content; ``think: false`` turns it off."""

from __future__ import annotations

from pathlib import Path

import httpx
import ollama
import pytest

from tests.e2e.conftest import upload_dir

pytestmark = pytest.mark.slow

THINKING_TEMPLATE = """{{- range .Messages }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}<|im_end|>
{{ end }}
{{- end }}<|im_start|>assistant
{{ if .Think }}<think>
{{ end }}"""


@pytest.fixture(scope="module")
def thinker(client: ollama.Client, tiny_llama_dir: Path) -> str:
    client.create(model="tiny-base", files=upload_dir(client, tiny_llama_dir))
    client.create(model="tiny-thinker", from_="tiny-base", template=THINKING_TEMPLATE)
    return "tiny-thinker"


def test_thinking_capability_and_split(client: ollama.Client, http: httpx.Client, thinker: str) -> None:
    assert "thinking" in (client.show(thinker).capabilities or [])
    assert "thinking" not in (client.show("tiny-base").capabilities or [])
    opts = {"temperature": 0, "num_predict": 12}
    # think defaults to on for a thinking model: the prompt opens <think>, so the output is reasoning.
    r = client.chat(model=thinker, messages=[{"role": "user", "content": "hello"}], options=opts)
    assert r.message.thinking and r.message.content == ""
    rendered = http.post("/api/chat", json={"model": thinker, "messages": [{"role": "user", "content": "hello"}], "_debug_render_only": True, "stream": False}).json()
    assert rendered["_debug_info"]["rendered_template"].endswith("<|im_start|>assistant\n<think>\n")
    streamed = list(client.chat(model=thinker, messages=[{"role": "user", "content": "hello"}], options=opts, stream=True))
    assert "".join(p.message.thinking or "" for p in streamed) == r.message.thinking
    off = client.chat(model=thinker, messages=[{"role": "user", "content": "hello"}], options=opts, think=False)
    assert off.message.content and not off.message.thinking
    gen = client.generate(model=thinker, prompt="hello", options=opts)
    assert gen.thinking and gen.response == ""
    # Earlier assistant reasoning is rendered back through .Thinking.
    history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "thinking": "because"}, {"role": "user", "content": "q2"}]
    rendered = http.post("/api/chat", json={"model": thinker, "messages": history, "_debug_render_only": True, "stream": False}).json()
    assert "<think>because</think>a<|im_end|>" in rendered["_debug_info"]["rendered_template"]
    r = http.post("/api/chat", json={"model": "tiny-base", "messages": [{"role": "user", "content": "x"}], "think": True})
    assert r.status_code == 400 and r.json() == {"error": '"tiny-base" does not support thinking'}
    r = http.post("/api/chat", json={"model": thinker, "messages": [{"role": "user", "content": "x"}], "think": "sometimes"})
    assert r.status_code == 400 and "invalid think value" in r.json()["error"]
