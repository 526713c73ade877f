"""/api/generate and /api/chat through the real server process, the official client and the real SmolLM2.

Greedy (temperature 0) outputs are compared token for token with Transformers' own ``generate`` on the
same weights, alone and inside a batch of concurrent requests.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow

GREEDY = {"temperature": 0}
PROMPTS = [
    "Why is the sky blue?",
    "Write a haiku about the sea.",
    "What is 2+2?",
    "Name three fruits and describe each one in a sentence or two, please.",
    "Tell me about Paris.",
    "What is Python?",
    "Explain gravity briefly.",
    "Who wrote Hamlet?",
]


@pytest.fixture(scope="module")
def reference(server: ServerProcess, smollm2: str, client: ollama.Client) -> Any:
    """Transformers itself on the same weights (the store's cached conversion of the GGUF)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    digest = json.loads((server.models / "manifests/registry.ollama.ai/library/smollm2/135m").read_text())["layers"][0]["digest"]
    directory = server.models / "ollama-torch" / "derived" / digest.replace(":", "-")
    tok = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()

    def generate(prompt: str, n: int) -> list[int]:
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt")
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=n, do_sample=False)
        return [t for t in out[0][ids.shape[1] :].tolist() if t != tok.eos_token_id]

    def logprobs(prompt: str, n: int) -> list[tuple[int, float]]:
        """Greedy ids with the log-softmax of Transformers' own logits for each."""
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt")
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=n, do_sample=False, output_logits=True, return_dict_in_generate=True)
        new = out.sequences[0][ids.shape[1] :].tolist()
        return [(t, float(torch.log_softmax(step[0].float(), -1)[t])) for t, step in zip(new, out.logits, strict=True)]

    generate.logprobs = logprobs  # type: ignore[attr-defined]
    generate.prompt_ids = lambda p: list(tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True)["input_ids"])  # type: ignore[attr-defined]
    return generate


def generated_ids(context: list[int], prompt_len: int) -> list[int]:
    return context[prompt_len:]


def test_streaming_chunks_and_final_metrics(client: ollama.Client, smollm2: str, http: httpx.Client) -> None:
    prompt = "Why is the sky blue? Answer for a curious child named Zebulon."
    parts = list(client.generate(model=smollm2, prompt=prompt, options={**GREEDY, "num_predict": 16}, stream=True))
    assert len(parts) > 2 and all(not p.done for p in parts[:-1])
    final = parts[-1]
    assert final.done and final.done_reason == "length" and final.eval_count == 16
    for field in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(getattr(final, field), int) and getattr(final, field) > 0, field
    # Tokens shared with earlier prompts (the default system prompt) come from the prefix cache and are not
    # counted as evaluated, as in Ollama; the rest of the prompt is.
    assert final.context and len(final.context) - 16 > 20
    assert final.prompt_eval_count and 5 < final.prompt_eval_count <= len(final.context) - 16
    text = "".join(p.response for p in parts)
    assert len(text.split()) >= 8 and text.isprintable()
    ps = http.get("/api/ps").json()["models"]
    entry = next(m for m in ps if m["name"] == smollm2)
    assert entry["size"] > 100_000_000 and entry["size_vram"] == 0 and entry["context_length"] == 4096
    assert set(entry) >= {"name", "model", "size", "digest", "details", "expires_at", "size_vram", "context_length"}


def test_stream_false_equals_stream(client: ollama.Client, smollm2: str) -> None:
    opts = {**GREEDY, "num_predict": 20}
    whole = client.generate(model=smollm2, prompt="What is Python?", options=opts)
    parts = list(client.generate(model=smollm2, prompt="What is Python?", options=opts, stream=True))
    assert whole.response == "".join(p.response for p in parts) and whole.done and whole.eval_count == 20


def test_greedy_matches_transformers_alone_and_in_a_batch(client: ollama.Client, smollm2: str, reference: Any) -> None:
    n = 24
    expected = {p: reference(p, n) for p in PROMPTS}
    alone = client.generate(model=smollm2, prompt=PROMPTS[0], options={**GREEDY, "num_predict": n})
    plen = len(reference.prompt_ids(PROMPTS[0]))
    assert generated_ids(alone.context, plen) == expected[PROMPTS[0]]

    def run(prompt: str) -> list[int]:
        c = ollama.Client(host=str(client._client.base_url), timeout=600)
        r = c.generate(model=smollm2, prompt=prompt, options={**GREEDY, "num_predict": n})
        return generated_ids(r.context, len(reference.prompt_ids(prompt)))

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        results = list(pool.map(run, PROMPTS))
    for prompt, got in zip(PROMPTS, results, strict=True):
        assert got == expected[prompt], prompt


def _logprob_text(entries: list[dict[str, Any]]) -> str:
    return b"".join(bytes(e["bytes"]) for e in entries).decode()


def test_logprobs_are_the_models_own(client: ollama.Client, smollm2: str, reference: Any, http: httpx.Client) -> None:
    n = 10
    expected = reference.logprobs(PROMPTS[0], n)
    body = {"model": smollm2, "prompt": PROMPTS[0], "stream": False, "options": {**GREEDY, "num_predict": n}}
    r = http.post("/api/generate", json={**body, "logprobs": True, "top_logprobs": 3}).json()
    entries = r["logprobs"]
    assert len(entries) == n  # one per generated token (Ollama's num-predict integration test)
    assert _logprob_text(entries) == r["response"]  # exact bytes: they add up to the text
    for entry, (token, logprob) in zip(entries, expected, strict=True):
        assert abs(entry["logprob"] - logprob) < 1e-3, (entry, token)
        top = entry["top_logprobs"]
        assert len(top) == 3 and [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert top[0] == {k: entry[k] for k in ("token", "logprob", "bytes")}  # greedy picks the most likely
    # the official client, streaming: the same entries, spread over the chunks; no alternatives unless asked
    streamed = [e for part in client.generate(model=smollm2, prompt=PROMPTS[0], options={**GREEDY, "num_predict": n},
                                              logprobs=True, stream=True) for e in (part.logprobs or [])]
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [(e["token"], round(e["logprob"], 4)) for e in entries]
    assert all(not e.top_logprobs for e in streamed)
    assert "logprobs" not in http.post("/api/generate", json={**body, "options": {**GREEDY, "num_predict": 2}}).json()
    only_top = http.post("/api/generate", json={**body, "top_logprobs": 2, "options": {**GREEDY, "num_predict": 2}}).json()
    assert "logprobs" not in only_top  # as in Ollama, top_logprobs without logprobs asks for nothing


def test_logprobs_trim_stop_strings_and_come_with_chat(client: ollama.Client, smollm2: str, http: httpx.Client) -> None:
    full = client.generate(model=smollm2, prompt="Why is the sky blue?", options={**GREEDY, "num_predict": 30}).response
    stop = " ".join(full.split()[4:6])
    r = http.post("/api/generate", json={"model": smollm2, "prompt": "Why is the sky blue?", "stream": False, "logprobs": True,
                                         "options": {**GREEDY, "num_predict": 30, "stop": [stop]}}).json()
    text = _logprob_text(r["logprobs"])
    assert r["done_reason"] == "stop" and stop not in text and text.startswith(r["response"]) and len(text) < len(full)
    chat = http.post("/api/chat", json={"model": smollm2, "messages": [{"role": "user", "content": "Hi"}], "stream": False,
                                        "logprobs": True, "top_logprobs": 1, "options": {**GREEDY, "num_predict": 8}}).json()
    entries = chat["logprobs"]
    assert len(entries) == chat["eval_count"] - (chat["done_reason"] == "stop")  # an end-of-sequence token has none
    assert all(len(e["top_logprobs"]) == 1 for e in entries)
    assert _logprob_text(entries) == chat["message"]["content"]
    typed = client.chat(model=smollm2, messages=[{"role": "user", "content": "Hi"}], options={**GREEDY, "num_predict": 8}, logprobs=True)
    assert [e.token for e in typed.logprobs] == [e["token"] for e in entries]


def test_seeded_sampling_is_batch_independent(client: ollama.Client, smollm2: str) -> None:
    opts = {"temperature": 0.9, "seed": 1234, "num_predict": 16}
    alone = client.generate(model=smollm2, prompt="Tell me a story.", options=opts).response
    assert client.generate(model=smollm2, prompt="Tell me a story.", options=opts).response == alone

    def run(i: int) -> str:
        c = ollama.Client(host=str(client._client.base_url), timeout=600)
        if i == 0:
            return c.generate(model=smollm2, prompt="Tell me a story.", options=opts).response
        return c.generate(model=smollm2, prompt=PROMPTS[i], options={"temperature": 1.0, "num_predict": 16}).response

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, range(8)))
    assert results[0] == alone
    other = client.generate(model=smollm2, prompt="Tell me a story.", options={**opts, "seed": 99}).response
    assert other != alone


def test_stop_strings_are_never_emitted(client: ollama.Client, smollm2: str) -> None:
    full = client.generate(model=smollm2, prompt="Why is the sky blue?", options={**GREEDY, "num_predict": 30}).response
    words = full.split()
    stop = " ".join(words[4:6])  # a stop string spanning several tokens
    parts = list(client.generate(model=smollm2, prompt="Why is the sky blue?", options={**GREEDY, "num_predict": 30, "stop": [stop]}, stream=True))
    text = "".join(p.response for p in parts)
    assert stop not in text and full.startswith(text) and parts[-1].done_reason == "stop"


def test_system_template_raw_and_context(client: ollama.Client, smollm2: str, http: httpx.Client) -> None:
    debug = http.post("/api/generate", json={"model": smollm2, "prompt": "hi", "system": "You are terse.", "_debug_render_only": True, "stream": False}).json()
    assert "<|im_start|>system\nYou are terse.<|im_end|>" in debug["_debug_info"]["rendered_template"]
    debug = http.post("/api/generate", json={"model": smollm2, "prompt": "hi", "template": "Q: {{ .Prompt }}\nA:", "_debug_render_only": True, "stream": False}).json()
    assert debug["_debug_info"]["rendered_template"] == "Q: hi\nA:"
    raw = client.generate(model=smollm2, prompt="The capital of France is", raw=True, options={**GREEDY, "num_predict": 5})
    assert raw.context is None and raw.eval_count == 5
    first = client.generate(model=smollm2, prompt="My name is Ada.", options={**GREEDY, "num_predict": 8})
    second = client.generate(model=smollm2, prompt="What is my name?", context=first.context, options={**GREEDY, "num_predict": 8})
    assert second.context[: len(first.context)] == first.context
    r = http.post("/api/generate", json={"model": smollm2, "prompt": "x", "raw": True, "system": "s"})
    assert r.status_code == 400 and r.json() == {"error": "raw mode does not support template, system, or context"}


def test_suffix_needs_insert_capability(client: ollama.Client, smollm2: str, http: httpx.Client) -> None:
    r = http.post("/api/generate", json={"model": smollm2, "prompt": "def f(", "suffix": "return x"})
    assert r.status_code == 400 and r.json()["error"] == "registry.ollama.ai/library/smollm2:135m does not support insert"
    client.create(model="smol-fim", from_=smollm2, template="{{ if .Suffix }}<fim_prefix>{{ .Prompt }}<fim_suffix>{{ .Suffix }}<fim_middle>{{ else }}{{ .Prompt }}{{ end }}")
    assert "insert" in (client.show("smol-fim").capabilities or [])
    out = http.post("/api/generate", json={"model": "smol-fim", "prompt": "def f(", "suffix": "return x", "_debug_render_only": True, "stream": False}).json()
    assert out["_debug_info"]["rendered_template"] == "<fim_prefix>def f(<fim_suffix>return x<fim_middle>"
    done = client.generate(model="smol-fim", prompt="def f(", suffix="return x", options={**GREEDY, "num_predict": 4})
    assert done.done and done.eval_count == 4


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"prompt": "x"}, 404, "model '' not found"),
        ({"model": "-bad", "prompt": "x"}, 400, "invalid model name"),
        ({"model": "nope", "prompt": "x"}, 404, "model 'nope' not found"),
        ({"model": "smollm2:135m", "prompt": "x", "think": True}, 400, '"smollm2:135m" does not support thinking'),
        ({"model": "smollm2:135m", "prompt": "x", "images": ["aGVsbG8="]}, 400, '"smollm2:135m" does not support images'),
        ({"model": "smollm2:135m", "prompt": "x", "format": "yaml"}, 400, 'invalid format: "\\"yaml\\""'),
        ({"model": "smollm2:135m", "prompt": "x", "options": {"temperature": "hot"}}, 400, 'option "temperature" must be of type float32'),
        ({"model": "smollm2:135m", "prompt": "x", "options": {"top_k": -3}}, 400, "`top_k` must be a non-negative int"),
        ({"model": "smollm2:135m", "prompt": "x", "keep_alive": "300"}, 400, 'time: missing unit in duration "300"'),
        ({"model": "smollm2:135m", "prompt": "x", "top_logprobs": 21}, 400, "top_logprobs must be between 0 and 20"),
        ({"model": "smollm2:135m", "prompt": 5}, 400, "cannot unmarshal number into Go struct field GenerateRequest.prompt of type string"),
    ],
)
def test_generate_errors(http: httpx.Client, smollm2: str, body: dict[str, Any], status: int, message: str) -> None:
    r = http.post("/api/generate", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_unknown_options_are_ignored(client: ollama.Client, smollm2: str) -> None:
    r = client.generate(model=smollm2, prompt="hi", options={**GREEDY, "num_predict": 3, "mirostat": 2, "made_up": 1})
    assert r.done and r.eval_count == 3


def test_sampling_options_shape_the_output(client: ollama.Client, smollm2: str) -> None:
    base = {"num_predict": 24, "seed": 7}
    greedy = client.generate(model=smollm2, prompt="List some colors.", options={**base, "temperature": 0}).response
    assert client.generate(model=smollm2, prompt="List some colors.", options={**base, "temperature": 1.5, "top_k": 1}).response == greedy
    assert client.generate(model=smollm2, prompt="List some colors.", options={**base, "temperature": 1.5, "top_p": 0.0}).response == greedy
    assert client.generate(model=smollm2, prompt="List some colors.", options={**base, "temperature": 1.5, "min_p": 1.0}).response == greedy
    penalized = client.generate(model=smollm2, prompt="List some colors.", options={**base, "temperature": 0, "repeat_penalty": 1.8, "frequency_penalty": 1.0}).response
    assert penalized != greedy
    typical = client.generate(model=smollm2, prompt="List some colors.", options={**base, "temperature": 0.7, "typical_p": 0.5}).response
    assert typical


def test_num_ctx_truncates_long_prompts(client: ollama.Client, smollm2: str, http: httpx.Client) -> None:
    long_prompt = "Count with me: " + " ".join(str(i) for i in range(600))
    r = client.generate(model=smollm2, prompt=long_prompt, options={**GREEDY, "num_ctx": 256, "num_predict": 4})
    assert r.done and r.prompt_eval_count is not None and r.prompt_eval_count <= 256
    refused = http.post("/api/generate", json={"model": smollm2, "prompt": long_prompt, "truncate": False, "options": {"num_ctx": 256}})
    assert refused.status_code == 400 and refused.json() == {"error": "the input length exceeds the context length"}


def test_num_predict_minus_two_fills_context(client: ollama.Client, smollm2: str) -> None:
    r = client.generate(model=smollm2, prompt="Tell me a very long story.", options={"temperature": 0.8, "seed": 3, "num_ctx": 96, "num_predict": -2})
    assert r.done and r.eval_count is not None and 0 < r.eval_count <= 96


def test_chat_history_system_and_stream_false(client: ollama.Client, smollm2: str, http: httpx.Client) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant who answers briefly."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Germany?"},
    ]
    r = client.chat(model=smollm2, messages=messages, options={**GREEDY, "num_predict": 12})
    assert r.message.role == "assistant" and r.message.content and r.done_reason in ("stop", "length")
    debug = http.post("/api/chat", json={"model": smollm2, "messages": messages, "_debug_render_only": True, "stream": False}).json()
    rendered = debug["_debug_info"]["rendered_template"]
    assert rendered.index("capital of France") < rendered.index("Paris.") < rendered.index("And of Germany?")
    assert rendered.endswith("<|im_start|>assistant\n")
    parts = list(client.chat(model=smollm2, messages=messages, options={**GREEDY, "num_predict": 12}, stream=True))
    assert "".join(p.message.content for p in parts) == r.message.content
    assert "context" not in http.post("/api/chat", json={"model": smollm2, "messages": messages, "stream": False, "options": {"num_predict": 2}}).json()


def test_chat_errors(http: httpx.Client, smollm2: str) -> None:
    r = http.post("/api/chat", json={"messages": []})
    assert r.status_code == 400 and r.json() == {"error": "model is required"}
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    r = http.post("/api/chat", json={"model": smollm2, "messages": [{"role": "user", "content": "x"}], "tools": tools})
    assert r.status_code == 400 and r.json()["error"] == "registry.ollama.ai/library/smollm2:135m does not support tools"


def test_prefix_reuse_on_the_next_turn(client: ollama.Client, smollm2: str) -> None:
    history = [{"role": "system", "content": "You are a patient teacher. " * 20}, {"role": "user", "content": "Explain photosynthesis."}]
    first = client.chat(model=smollm2, messages=history, options={**GREEDY, "num_predict": 24})
    history += [{"role": "assistant", "content": first.message.content}, {"role": "user", "content": "Shorter, please."}]
    second = client.chat(model=smollm2, messages=history, options={**GREEDY, "num_predict": 8})
    assert first.prompt_eval_count and second.prompt_eval_count
    # Only the new turn is evaluated: far fewer tokens than the whole conversation.
    assert second.prompt_eval_count < first.prompt_eval_count / 2


def test_load_unload_and_keep_alive(client: ollama.Client, smollm2: str, http: httpx.Client) -> None:
    r = http.post("/api/generate", json={"model": smollm2, "keep_alive": 0}).json()
    assert r["done_reason"] == "unload" and r["response"] == "" and r["done"] is True
    assert all(m["name"] != smollm2 for m in http.get("/api/ps").json()["models"])
    r = http.post("/api/generate", json={"model": smollm2, "keep_alive": "2s"}).json()
    assert r["done_reason"] == "load"
    entry = next(m for m in http.get("/api/ps").json()["models"] if m["name"] == smollm2)
    assert entry["expires_at"]
    deadline = time.monotonic() + 20
    while any(m["name"] == smollm2 for m in http.get("/api/ps").json()["models"]) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert all(m["name"] != smollm2 for m in http.get("/api/ps").json()["models"])
    r = http.post("/api/chat", json={"model": smollm2, "messages": [], "keep_alive": -1}).json()
    assert r["done_reason"] == "load" and r["message"] == {"role": "assistant", "content": ""}
    forever = next(m for m in http.get("/api/ps").json()["models"] if m["name"] == smollm2)
    assert forever["expires_at"].startswith("2318")
    http.post("/api/generate", json={"model": smollm2, "keep_alive": "5m"})


def test_disconnect_frees_the_batch_slot(server: ServerProcess, smollm2: str, http: httpx.Client) -> None:
    http.post("/api/generate", json={"model": smollm2, "keep_alive": "5m"})
    stop = threading.Event()

    def stream_then_drop() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c, c.stream("POST", "/api/generate", json={"model": smollm2, "prompt": "Count to a thousand.", "options": {"num_predict": 2000}}) as r:
            for _ in r.iter_lines():
                if stop.is_set():
                    return

    t = threading.Thread(target=stream_then_drop)
    t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _running(http, smollm2) == 0:
        time.sleep(0.05)
    assert _running(http, smollm2) == 1
    stop.set()
    t.join(30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _running(http, smollm2) != 0:
        time.sleep(0.05)
    assert _running(http, smollm2) == 0


def _running(http: httpx.Client, model: str) -> int:
    for m in http.get("/api/x/engine").json()["models"]:
        if m["name"] == model:
            return int(m["running"])
    return 0


def test_examples_module(server: ServerProcess, smollm2: str) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{server.port}"}
    run = lambda *args: subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True, timeout=120)  # noqa: E731
    out = run("ollama_torch.examples.generate_example", "--prompt", "Why is the sky blue?", "--temperature", "0", "--num-predict", "24", "--stream")
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    out = run("ollama_torch.examples.chat_example", "--prompt", "Hello!", "--model", "missing-model", "--temperature", "0", "--num-predict", "16")
    assert out.returncode == 0 and "falling back to the demo model smollm2:135m" in out.stderr and out.stdout.strip()
    out = run("ollama_torch.examples.generate_example", "--prompt", "x", "--model", "missing-model", "--no-fallback")
    assert out.returncode != 0 and "not found" in out.stderr


def test_models_dir_unaffected_by_generation(server: ServerProcess) -> None:
    assert not list(Path(server.models / "blobs").glob(".partial-*"))
