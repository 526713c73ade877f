"""Which known Go template a checkpoint's Jinja chat template gets (``create/template_match.py``): by rendering
the same probe conversations with both, table-driven over the families' published templates."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ollama_torch.create.template_match import PROBES, Message, _render, choose_template
from ollama_torch.templates import OllamaTemplate
from ollama_torch.templates.known import known_templates
from tests.tiny_families import (
    GEMMA3_TEMPLATE,
    GEMMA_TEMPLATE,
    GRANITE_TEMPLATE,
    LLAMA3_TEMPLATE,
    MISTRAL_TEMPLATE,
    PHI3_TEMPLATE,
    QWEN2_TEMPLATE,
)
from tests.tiny_models import CHAT_TEMPLATE

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def jinja(template: str, bos: str = "<s>", eos: str = "</s>") -> Callable[[Sequence[Message]], str]:
    """A renderer as Transformers' ``apply_chat_template`` sets Jinja up."""

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    compiled = env.from_string(template)
    return lambda messages: compiled.render(messages=list(messages), add_generation_prompt=True, bos_token=bos, eos_token=eos)


@pytest.mark.parametrize(
    ("template", "bos", "eos", "name", "system"),
    [
        (CHATML, "", "<|im_end|>", "chatml", ""),
        (CHAT_TEMPLATE, "", "<|im_end|>", "chatml", ""),  # the tiny models' ChatML with image parts
        (QWEN2_TEMPLATE, "", "<|im_end|>", "chatml", "You are a helpful assistant."),
        (LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>", "llama3-instruct", ""),
        (MISTRAL_TEMPLATE, "<s>", "</s>", "mistral-instruct", ""),
        (GEMMA_TEMPLATE, "<bos>", "<eos>", "gemma-instruct", ""),
        (GEMMA3_TEMPLATE, "<bos>", "<eos>", "gemma3-instruct", ""),
        (PHI3_TEMPLATE, "<s>", "<|endoftext|>", "phi-3", ""),
    ],
)
def test_family_templates(template: str, bos: str, eos: str, name: str, system: str) -> None:
    choice = choose_template(jinja(template, bos, eos), bos)
    assert choice is not None and (choice.name, choice.system) == (name, system)
    assert choice.stop == next(k.stop for k in known_templates() if k.name == name)


def test_no_match_keeps_the_jinja_template() -> None:
    assert choose_template(jinja(GRANITE_TEMPLATE, "<|end_of_text|>", "<|end_of_text|>")) is None


def test_bos_llama_cpp_adds_must_be_the_templates_own() -> None:
    # a tokenizer that adds BOS under a template that does not write it: llama.cpp's prompt would differ
    assert choose_template(jinja(CHATML), bos="<|endoftext|>") is None
    # the same template writing BOS itself, with a tokenizer adding none: the Go template would lack it
    assert choose_template(jinja("{{ bos_token }}" + CHATML, bos="<s>")) is None


def test_a_template_refusing_most_probes_is_not_matched() -> None:
    refusing = "{% if messages|length > 1 %}{{ raise_exception('one message only') }}{% endif %}" + CHATML
    assert choose_template(jinja(refusing)) is None


def test_known_templates_render_the_probes() -> None:
    for known in known_templates():
        template = OllamaTemplate.parse(known.text)
        for probe in PROBES:
            text = _render(template, probe)
            assert probe[-1]["content"] in text, (known.name, text)
