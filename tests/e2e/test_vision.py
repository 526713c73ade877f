"""Images end to end, and the tiny models against Transformers, through the real server process.

A tiny random-weight LLaVA (``configs/tiny-vision.json``) is created from its Hugging Face directory with
the official client, then prompted with PNGs drawn here. Each image must become exactly the configured
number of image tokens (``prompt_eval_count`` grows by that much), and greedy decoding must give the same
tokens as Transformers' own ``processor.apply_chat_template`` + ``generate``, also for a tokenizer that adds
BOS under a template that writes it (a prompt tokenized the wrong way gets two). The tiny Llama checks the
text path the same way, and that a text-only model refuses images as Ollama does.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from tests.e2e.conftest import upload_dir
from tests.tiny_models import load_config

pytestmark = pytest.mark.slow

PROMPT = "Describe this image."
GREEDY = {"temperature": 0, "num_predict": 8, "seed": 0}
# What upload_dir sends, plus the chat template, which Transformers 5 saves as chat_template.jinja.
PATTERNS = ("*.json", "**/*.json", "*.safetensors", "*.jinja")
CHATML_GO = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"
)
VISION = load_config("tiny-vision")
IMAGE_TOKENS = int(VISION["image_seq_length"])
IMAGE_ID = int(VISION["image_token_index"])


def png_bytes(width: int = 40, height: int = 30) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((4, 4, width // 2, height // 2), fill=(220, 30, 30))
    draw.ellipse((width // 2, height // 2, width - 2, height - 2), fill=(30, 60, 220))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _create(client: ollama.Client, name: str, directory: Path) -> str:
    client.create(model=name, files=upload_dir(client, directory, PATTERNS))
    return name


@pytest.fixture(scope="module")
def tiny_vision(client: ollama.Client, tiny_vision_dir: Path) -> str:
    return _create(client, "tiny-vision", tiny_vision_dir)


@pytest.fixture(scope="module")
def tiny_llama(client: ollama.Client, tiny_llama_dir: Path) -> str:
    return _create(client, "tiny-llama", tiny_llama_dir)


@pytest.fixture(scope="module", params=["plain", "bos"])
def vision_variant(request: pytest.FixtureRequest, client: ollama.Client) -> tuple[str, Path]:
    """(model name, directory) for the tiny LLaVA without and with a BOS-adding tokenizer."""
    if request.param == "plain":
        return request.getfixturevalue("tiny_vision"), request.getfixturevalue("tiny_vision_dir")
    directory = request.getfixturevalue("tiny_vision_bos_dir")
    return _create(client, "tiny-vision-bos", directory), directory


@pytest.fixture(scope="module", params=["plain", "bos"])
def llama_variant(request: pytest.FixtureRequest, client: ollama.Client) -> tuple[str, Path]:
    if request.param == "plain":
        return request.getfixturevalue("tiny_llama"), request.getfixturevalue("tiny_llama_dir")
    directory = request.getfixturevalue("tiny_llama_bos_dir")
    return _create(client, "tiny-llama-bos", directory), directory


def post(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = http.post(path, json={"stream": False, **body})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    assert data["done"] is True, data
    return data


def render(http: httpx.Client, model: str, body: dict[str, Any], path: str = "/api/generate") -> str:
    """The prompt text the server renders for ``body`` (Ollama's ``_debug_render_only``)."""
    data = post(http, path, {"model": model, **body, "_debug_render_only": True})
    return str(data["_debug_info"]["rendered_template"])


def hf_reference(directory: Path, messages: list[dict[str, Any]], max_new_tokens: int) -> tuple[list[int], list[int]]:
    """Transformers' own answer, (prompt ids, greedy new ids without EOS), for API-style chat messages:
    ``processor.apply_chat_template`` when there are images, else the tokenizer's."""
    import torch
    import transformers
    from PIL import Image

    hf_messages: list[dict[str, Any]] = []
    for m in messages:
        images = [Image.open(io.BytesIO(raw)).convert("RGB") for raw in m.get("images", [])]
        content: Any = m["content"]
        if images:
            content = [{"type": "image", "image": im} for im in images] + [{"type": "text", "text": content}]
        hf_messages.append({"role": m["role"], "content": content})
    kwargs: dict[str, Any] = {"add_generation_prompt": True, "tokenize": True, "return_dict": True, "return_tensors": "pt"}
    with torch.inference_mode():
        if any(m.get("images") for m in messages):
            processor = transformers.AutoProcessor.from_pretrained(str(directory), local_files_only=True)
            model = transformers.AutoModelForImageTextToText.from_pretrained(str(directory), local_files_only=True)
            inputs = dict(processor.apply_chat_template(hf_messages, **kwargs))
        else:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
            model = transformers.AutoModelForCausalLM.from_pretrained(str(directory), local_files_only=True)
            inputs = dict(tokenizer.apply_chat_template(hf_messages, **kwargs))  # type: ignore[arg-type]
        prompt = inputs["input_ids"][0].tolist()
        out = model.eval().generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    eos = int(model.generation_config.eos_token_id)
    return prompt, [t for t in out[0, len(prompt) :].tolist() if t != eos]


# -- capabilities --------------------------------------------------------------------------------------
def test_vision_model_capabilities(client: ollama.Client, tiny_vision: str, tiny_llama: str) -> None:
    show = client.show(tiny_vision)
    assert show.capabilities is not None and {"completion", "vision"} <= set(show.capabilities)
    assert show.details is not None and show.details.format == "safetensors" and show.details.family == "llava"
    text_caps = client.show(tiny_llama).capabilities or []
    assert "completion" in text_caps and "vision" not in text_caps


# -- images on /api/generate and /api/chat ----------------------------------------------------------------
def test_generate_with_image_inserts_image_tokens(http: httpx.Client, tiny_vision: str) -> None:
    plain = post(http, "/api/generate", {"model": tiny_vision, "prompt": PROMPT, "options": GREEDY})
    with_image = post(http, "/api/generate", {"model": tiny_vision, "prompt": PROMPT, "images": [b64(png_bytes())], "options": GREEDY})
    for data in (plain, with_image):
        assert data["eval_count"] > 0 and data["done_reason"] in ("stop", "length")
    assert with_image["prompt_eval_count"] > plain["prompt_eval_count"]
    assert with_image["prompt_eval_count"] - plain["prompt_eval_count"] == IMAGE_TOKENS


def test_images_that_overflow_the_context(http: httpx.Client, tiny_vision: str) -> None:
    plain = post(http, "/api/generate", {"model": tiny_vision, "prompt": PROMPT, "options": {**GREEDY, "num_predict": 1}})
    text_only = plain["prompt_eval_count"]
    body = {"model": tiny_vision, "prompt": PROMPT, "images": [b64(png_bytes())], "stream": False}
    r = http.post("/api/generate", json={**body, "options": {**GREEDY, "num_ctx": text_only + IMAGE_TOKENS // 2}})
    assert (r.status_code, r.json()) == (400, {"error": "the input length exceeds the context length"})
    # room for the prompt and two tokens: generation fills the context and stops there (no shift through an image)
    full = post(http, "/api/generate", {**body, "options": {**GREEDY, "num_ctx": text_only + IMAGE_TOKENS + 2, "num_predict": 50}})
    assert (full["done_reason"], full["eval_count"]) == ("length", 2)


def test_generate_with_image_via_official_client(client: ollama.Client, tiny_vision: str) -> None:
    resp = client.generate(model=tiny_vision, prompt=PROMPT, images=[png_bytes()], options=GREEDY)
    assert resp.done and (resp.eval_count or 0) > 0


def test_chat_with_image_inserts_image_tokens(http: httpx.Client, client: ollama.Client, tiny_vision: str) -> None:
    image = b64(png_bytes())

    def chat(images: list[str]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "user", "content": PROMPT} | ({"images": images} if images else {})
        return post(http, "/api/chat", {"model": tiny_vision, "messages": [message], "options": GREEDY})

    plain, one, two = chat([]), chat([image]), chat([image, image])
    for data in (plain, one, two):
        assert data["eval_count"] > 0 and data["message"]["role"] == "assistant"
    assert one["prompt_eval_count"] > plain["prompt_eval_count"]
    assert one["prompt_eval_count"] - plain["prompt_eval_count"] == IMAGE_TOKENS
    assert two["prompt_eval_count"] - plain["prompt_eval_count"] == 2 * IMAGE_TOKENS
    resp = client.chat(model=tiny_vision, messages=[{"role": "user", "content": PROMPT, "images": [png_bytes()]}], options=GREEDY)
    assert resp.done and resp.prompt_eval_count == one["prompt_eval_count"]


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
def test_image_prompt_matches_transformers(http: httpx.Client, vision_variant: tuple[str, Path], path: str) -> None:
    model, directory = vision_variant
    image = png_bytes()
    if path == "/api/generate":
        body: dict[str, Any] = {"prompt": PROMPT, "images": [b64(image)]}
    else:
        body = {"messages": [{"role": "user", "content": PROMPT, "images": [b64(image)]}]}
    data = post(http, path, {"model": model, **body, "options": GREEDY})
    prompt, new = hf_reference(directory, [{"role": "user", "content": PROMPT, "images": [image]}], GREEDY["num_predict"])
    assert prompt.count(IMAGE_ID) == IMAGE_TOKENS
    assert data["prompt_eval_count"] == len(prompt)  # one BOS at most, image tokens expanded
    assert data["eval_count"] == len(new) + (data["done_reason"] == "stop")
    if path == "/api/generate":
        assert data["context"] == prompt + new  # Ollama's context: prompt and generated ids, EOS excluded


def test_chat_images_across_turns(http: httpx.Client, tiny_vision: str, tiny_vision_dir: Path) -> None:
    first, second = png_bytes(), png_bytes(64, 64)
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "What is this?", "images": [first]},
        {"role": "assistant", "content": "A picture."},
        {"role": "user", "content": "And this one?", "images": [second]},
    ]
    wire = [m | ({"images": [b64(i) for i in m["images"]]} if "images" in m else {}) for m in messages]
    assert render(http, tiny_vision, {"messages": wire}, path="/api/chat").count("<image>") == 2
    data = post(http, "/api/chat", {"model": tiny_vision, "messages": wire, "options": GREEDY})
    prompt, new = hf_reference(tiny_vision_dir, messages, GREEDY["num_predict"])
    assert prompt.count(IMAGE_ID) == 2 * IMAGE_TOKENS
    assert data["prompt_eval_count"] == len(prompt)
    assert data["eval_count"] == len(new) + (data["done_reason"] == "stop")


def test_go_template_places_images_at_their_tags(client: ollama.Client, http: httpx.Client, tiny_vision: str) -> None:
    """A vision model with an Ollama TEMPLATE: the ``[img-N]`` tags Ollama writes become image tokens."""
    client.create(model="tiny-vision-go", from_=tiny_vision, template=CHATML_GO)
    body = {"model": "tiny-vision-go", "prompt": PROMPT, "images": [b64(png_bytes())]}
    text = render(http, "tiny-vision-go", body)
    assert text.startswith("<|im_start|>user\n[img-0]") and text.count("[img-") == 1
    data = post(http, "/api/generate", {**body, "options": GREEDY})
    assert data["eval_count"] > 0
    assert data["context"][: data["prompt_eval_count"]].count(IMAGE_ID) == IMAGE_TOKENS


def test_generate_with_context_and_image(http: httpx.Client, tiny_vision: str) -> None:
    """``context`` from an earlier turn is kept in front of an image prompt, as for text prompts."""
    first = post(http, "/api/generate", {"model": tiny_vision, "prompt": "Hello!", "options": GREEDY})
    alone = post(http, "/api/generate", {"model": tiny_vision, "prompt": PROMPT, "images": [b64(png_bytes())], "options": GREEDY})
    body = {"model": tiny_vision, "prompt": PROMPT, "images": [b64(png_bytes())], "context": first["context"], "options": GREEDY}
    follow = post(http, "/api/generate", body)
    assert follow["context"][: len(first["context"])] == first["context"]
    assert follow["prompt_eval_count"] == len(first["context"]) + alone["prompt_eval_count"]


# -- refusals -------------------------------------------------------------------------------------------------
def _image_body(path: str, image: str) -> dict[str, Any]:
    if path == "/api/generate":
        return {"prompt": PROMPT, "images": [image]}
    return {"messages": [{"role": "user", "content": PROMPT, "images": [image]}]}


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
def test_text_model_refuses_images(http: httpx.Client, tiny_llama: str, path: str) -> None:
    r = http.post(path, json={"model": tiny_llama, "stream": False, **_image_body(path, b64(png_bytes()))})
    assert r.status_code == 400
    assert r.json() == {"error": f'"{tiny_llama}" does not support images'}


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
def test_invalid_base64_image(http: httpx.Client, tiny_vision: str, path: str) -> None:
    r = http.post(path, json={"model": tiny_vision, "stream": False, **_image_body(path, "not base64!!")})
    assert r.status_code == 400
    assert "illegal base64 data" in r.json()["error"]


@pytest.mark.parametrize("stream", [False, True])
def test_base64_that_is_not_an_image(http: httpx.Client, tiny_vision: str, stream: bool) -> None:
    r = http.post("/api/generate", json={"model": tiny_vision, "stream": stream, **_image_body("/api/generate", b64(b"just text"))})
    assert r.status_code == 400
    assert "invalid image data" in r.json()["error"]


# -- the text path against Transformers -----------------------------------------------------------------------
def test_tiny_llama_greedy_matches_transformers(http: httpx.Client, llama_variant: tuple[str, Path]) -> None:
    model, directory = llama_variant
    body = {"model": model, "prompt": "Why is the sky blue?", "options": GREEDY}
    text = render(http, model, body)
    assert text.endswith("<|im_start|>user\nWhy is the sky blue?<|im_end|>\n<|im_start|>assistant\n")
    data = post(http, "/api/generate", body)
    prompt, new = hf_reference(directory, [{"role": "user", "content": "Why is the sky blue?"}], GREEDY["num_predict"])
    assert new, "the reference stopped at once; pick another prompt or seed"
    assert data["context"] == prompt + new
    assert data["eval_count"] == len(new) + (data["done_reason"] == "stop")
    assert data["done_reason"] == ("length" if len(new) == GREEDY["num_predict"] else "stop")
