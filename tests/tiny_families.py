"""Tiny random-weight models of each family the GGUF export covers, built offline like ``tiny_models``.

Each family gets the tokenizer kind its real checkpoints ship, trained here on ``tiny_models.CORPUS``:
byte-level BPE with the family's pre-tokenizer (GPT-2's split, Llama 3's or Qwen 2's regex, SmolLM/Granite's
digit split) or a SentencePiece ``tokenizer.model`` (Llama 2/Mistral style with a dummy prefix, Gemma style
without one), the family's special tokens at the ids its config names, and its chat template in the form
the published checkpoints use. ``FAMILY_MODELS`` also records what the export should make of it: the known
Go template it should be matched with (None: no match, the Jinja template stays in the GGUF).
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.tiny_models import _check_ids, _corpus_lines, _new_model, _save_model, load_config

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
GEMMA3_TEMPLATE = (
    "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n    {%- set loop_messages = messages -%}\n{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n        {{ message['content'] | trim }}\n"
    "    {%- else -%}\n        {{ raise_exception(\"Invalid content type\") }}\n    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n    {{'<start_of_turn>model\n'}}\n{%- endif -%}\n"
)
PHI3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] "
    "+ '<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}"
    "{% endif %}"
)
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Qwen 3's shape: ChatML with tools and reasoning, which no known Go template offers.
QWEN3_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\n# Tools\n<tools>' }}{%- for tool in tools %}{{- tool | tojson }}"
    "{%- endfor %}{{- '</tools><|im_end|>\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if message.role == 'assistant' %}"
    "{%- set content = message.content.split('</think>')[-1].lstrip('\n') %}"
    "{{- '<|im_start|>assistant\n' + content + '<|im_end|>\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}"
    "{%- endif %}"
)
GRANITE_TEMPLATE = (
    "{%- for message in messages %}{{- '<|start_of_role|>' + message['role'] + '<|end_of_role|>' "
    "+ message['content'] + '<|end_of_text|>\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_of_role|>assistant<|end_of_role|>' }}{%- endif %}"
)


@dataclass(frozen=True)
class FamilyModel:
    config: str  # configs/<config>.json
    tokenizer: str  # "bpe:gpt2" | "bpe:llama3" | "bpe:qwen2" | "bpe:digits" | "spm:llama" | "spm:gemma"
    specials: tuple[str, ...]  # BPE: trained first, ids 0..; SPM: user-defined pieces after the control ones
    template: str
    bos: str | None = None
    eos: str | None = None
    pad: str | None = None
    add_bos: bool = False
    added: tuple[tuple[str, bool], ...] = ()  # SPM: tokens added after the SentencePiece vocabulary (text, special)
    generation_eos: tuple[int, ...] = ()
    expected_template: str | None = None  # the known Go template it should match
    extra: dict[str, Any] = field(default_factory=dict)


_GEMMA_SPECIALS = ("<mask>", "<start_of_turn>", "<end_of_turn>")  # GemmaTokenizer expects a <mask>
_CHATML = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
FAMILY_MODELS: dict[str, FamilyModel] = {
    "llama3": FamilyModel(
        "tiny-llama3", "bpe:llama3",
        ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        LLAMA3_TEMPLATE, bos="<|begin_of_text|>", eos="<|eot_id|>", add_bos=True, generation_eos=(1, 4),
        expected_template="llama3-instruct",
    ),
    "mistral": FamilyModel("tiny-mistral", "spm:llama", (), MISTRAL_TEMPLATE, "<s>", "</s>", add_bos=True, expected_template="mistral-instruct"),
    "mixtral": FamilyModel("tiny-mixtral", "spm:llama", (), MISTRAL_TEMPLATE, "<s>", "</s>", add_bos=True, expected_template="mistral-instruct"),
    "gemma": FamilyModel(
        "tiny-gemma", "spm:gemma", _GEMMA_SPECIALS, GEMMA_TEMPLATE, "<bos>", "<eos>", "<pad>",
        add_bos=True, expected_template="gemma-instruct",
    ),
    "gemma2": FamilyModel(
        "tiny-gemma2", "spm:gemma", _GEMMA_SPECIALS, GEMMA_TEMPLATE, "<bos>", "<eos>", "<pad>",
        add_bos=True, expected_template="gemma-instruct",
    ),
    "gemma3": FamilyModel(
        "tiny-gemma3", "spm:gemma", _GEMMA_SPECIALS, GEMMA3_TEMPLATE, "<bos>", "<eos>", "<pad>",
        add_bos=True, expected_template="gemma3-instruct",
    ),
    "phi3": FamilyModel(
        "tiny-phi3", "spm:llama", (), PHI3_TEMPLATE, "<s>", "<|endoftext|>", "<|endoftext|>", add_bos=True,
        added=(("<|endoftext|>", True), ("<|assistant|>", False), ("<|end|>", False), ("<|system|>", False), ("<|user|>", False)),
        generation_eos=(512, 514), expected_template="phi-3",
    ),
    "qwen2": FamilyModel("tiny-qwen2", "bpe:qwen2", _CHATML, QWEN2_TEMPLATE, "<|endoftext|>", "<|im_end|>", "<|endoftext|>", expected_template="chatml"),
    "qwen3": FamilyModel("tiny-qwen3", "bpe:qwen2", (*_CHATML, "<think>", "</think>"), QWEN3_TEMPLATE, None, "<|im_end|>", "<|endoftext|>"),
    "granite": FamilyModel(
        "tiny-granite", "bpe:digits", ("<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>"), GRANITE_TEMPLATE,
        "<|end_of_text|>", "<|end_of_text|>", "<|end_of_text|>",
    ),
}

_SPLIT = {
    "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}


def _bpe(kind: str, specials: tuple[str, ...], vocab_size: int) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(ignore_merges=kind == "llama3"))
    if kind in _SPLIT:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_SPLIT[kind]), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        if kind == "qwen2":
            tok.normalizer = normalizers.NFC()
    elif kind == "digits":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(specials), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(_corpus_lines(), trainer)
    if tok.get_vocab_size() != vocab_size:
        raise ValueError(f"the corpus trains {tok.get_vocab_size()} BPE tokens, not the config's vocab_size {vocab_size}")
    return tok


def _bpe_tokenizer(spec: FamilyModel, vocab_size: int) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=_bpe(spec.tokenizer.split(":")[1], spec.specials, vocab_size),
        bos_token=spec.bos, eos_token=spec.eos, pad_token=spec.pad, unk_token=None,
        add_bos_token=spec.add_bos, chat_template=spec.template, model_max_length=512,
        clean_up_tokenization_spaces=spec.tokenizer == "bpe:digits",
    )


def _spm_model(style: str, specials: tuple[str, ...], vocab_size: int) -> bytes:
    import sentencepiece as spm

    ids: dict[str, Any] = {"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1}
    if style == "gemma":
        ids = {"pad_id": 0, "eos_id": 1, "bos_id": 2, "unk_id": 3, "eos_piece": "<eos>", "bos_piece": "<bos>"}
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus_lines()), model_writer=out, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, split_digits=True, allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", add_dummy_prefix=style != "gemma",
        user_defined_symbols=list(specials), minloglevel=2, **ids,
    )
    return out.getvalue()


def _spm_tokenizer(spec: FamilyModel, model_bytes: bytes) -> Any:
    from transformers import AddedToken, GemmaTokenizer, LlamaTokenizer

    cls = GemmaTokenizer if spec.tokenizer == "spm:gemma" else LlamaTokenizer
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.model").write_bytes(model_bytes)
        tokenizer = cls.from_pretrained(tmp, add_bos_token=spec.add_bos)
    if spec.added:
        tokenizer.add_tokens([AddedToken(text, special=special, normalized=False) for text, special in spec.added])
    if spec.specials:
        tokenizer.add_special_tokens({"additional_special_tokens": list(spec.specials)})
    for key, token in (("bos_token", spec.bos), ("eos_token", spec.eos), ("pad_token", spec.pad)):
        if token is not None:
            setattr(tokenizer, key, token)
    tokenizer.chat_template = spec.template
    return tokenizer


def build_family(name: str, directory: Path) -> Path:
    """The tiny model of family ``name`` (a ``FAMILY_MODELS`` key) in ``directory`` (created); returns it."""
    from transformers import AutoModelForCausalLM

    spec = FAMILY_MODELS[name]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = load_config(spec.config)
    if spec.tokenizer.startswith("bpe:"):
        tokenizer = _bpe_tokenizer(spec, cfg["vocab_size"])
        model_bytes = None
    else:
        base = cfg["vocab_size"] - (cfg["vocab_size"] % 128)  # rows past the tokenizer are padding (Phi-3)
        model_bytes = _spm_model(spec.tokenizer.split(":")[1], spec.specials, base)
        tokenizer = _spm_tokenizer(spec, model_bytes)
    _check_ids(tokenizer, cfg)
    if len(tokenizer) > cfg["vocab_size"]:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, more than the config's vocab_size {cfg['vocab_size']}")
    _save_model(_new_model(AutoModelForCausalLM, cfg), directory)
    tokenizer.save_pretrained(str(directory))
    if model_bytes is not None:
        (directory / "tokenizer.model").write_bytes(model_bytes)
    if spec.generation_eos:
        gen_path = directory / "generation_config.json"
        gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
        gen["eos_token_id"] = list(spec.generation_eos)
        gen_path.write_text(json.dumps(gen, indent=2))
    return directory

