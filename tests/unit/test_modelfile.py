"""Modelfile parsing, rendering and create requests: the cases of Ollama's ``parser/parser_test.go``."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from ollama_torch.modelfile import (
    ERR_INVALID_COMMAND,
    ERR_INVALID_ROLE,
    Command,
    Modelfile,
    ModelfileError,
    decode_modelfile,
    files_for_model,
    parameter_value,
    parse_modelfile,
    to_create_request,
)
from ollama_torch.options_schema import OPTIONS, RUNNER_OPTIONS, OptionType, coerce_option, default_options

C = Command
LLAMA3_TEMPLATE = (
    "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
    "{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>"
)

# -- parsing ----------------------------------------------------------------------------------------

PARSE_CASES: list[tuple[str, str, list[Command]]] = [
    (
        "file",
        f'\nFROM model1\nADAPTER adapter1\nLICENSE MIT\nPARAMETER param1 value1\nPARAMETER param2 value2\nTEMPLATE """{LLAMA3_TEMPLATE}"""    \n',
        [C("model", "model1"), C("adapter", "adapter1"), C("license", "MIT"), C("param1", "value1"),
         C("param2", "value2"), C("template", LLAMA3_TEMPLATE)],
    ),
    (
        "trim space",
        f'\nFROM "     model 1"\nADAPTER      adapter3\nLICENSE "MIT       "\nPARAMETER param1        value1\nTEMPLATE """   {LLAMA3_TEMPLATE}   """    \n',
        [C("model", "     model 1"), C("adapter", "adapter3"), C("license", "MIT       "), C("param1", "value1"),
         C("template", f"   {LLAMA3_TEMPLATE}   ")],
    ),
    ("from quoted spaces", 'FROM "FOO  BAR  "', [C("model", "FOO  BAR  ")]),
    ("from quoted then param", 'FROM "FOO BAR"\nPARAMETER param1 value1', [C("model", "FOO BAR"), C("param1", "value1")]),
    ("from unquoted spaces", "FROM     FOOO BAR    ", [C("model", "FOOO BAR")]),
    ("from path with space", "FROM /what/is/the path ", [C("model", "/what/is/the path")]),
    ("from name with tag", "FROM llama3:7b-instruct-q4_K_M", [C("model", "llama3:7b-instruct-q4_K_M")]),
    ("from after parameter", "PARAMETER param1 value1\nFROM foo", [C("param1", "value1"), C("model", "foo")]),
    (
        "trailing spaces",
        "PARAMETER what the \nFROM lemons make lemonade ",
        [C("what", "the"), C("model", "lemons make lemonade")],
    ),
    ("renderer", "\nFROM foo\nRENDERER renderer1\n", [C("model", "foo"), C("renderer", "renderer1")]),
    ("parser", "\nFROM foo\nPARSER parser1\n", [C("model", "foo"), C("parser", "parser1")]),
    ("draft", "\nFROM base\nDRAFT ./assistant\n", [C("model", "base"), C("draft", "./assistant")]),
    ("requires", "FROM foo\nREQUIRES 0.14.0\n", [C("model", "foo"), C("requires", "0.14.0")]),
    ("case-insensitive", "from foo\nParameter top_k 1\nsYsTeM hi\n", [C("model", "foo"), C("top_k", "1"), C("system", "hi")]),
    ("comment", "\n# comment\nFROM foo\n\t", [C("model", "foo")]),
    ("comment after command", "FROM foo\n# PARAMETER x y\nSYSTEM s # not a comment\n", [C("model", "foo"), C("system", "s # not a comment")]),
    (
        "message",
        "\nFROM foo\nMESSAGE system You are a file parser. Always parse things.\n",
        [C("model", "foo"), C("message", "system: You are a file parser. Always parse things.")],
    ),
    (
        "message at eof",
        "\nFROM foo\nMESSAGE system You are a file parser. Always parse things.",
        [C("model", "foo"), C("message", "system: You are a file parser. Always parse things.")],
    ),
    (
        "messages",
        "\nFROM foo\nMESSAGE system A.\nMESSAGE user Hey there!\nMESSAGE assistant Hello, I want to parse all the things!\n",
        [C("model", "foo"), C("message", "system: A."), C("message", "user: Hey there!"),
         C("message", "assistant: Hello, I want to parse all the things!")],
    ),
    (
        "multiline message",
        '\nFROM foo\nMESSAGE system """\nYou are a multiline file parser. Always parse things.\n"""\n\t\t\t',
        [C("model", "foo"), C("message", "system: \nYou are a multiline file parser. Always parse things.\n")],
    ),
    ("multiline system", '\nFROM foo\nSYSTEM """\nThis is a\nmultiline system.\n"""\n\t\t\t',
     [C("model", "foo"), C("system", "\nThis is a\nmultiline system.\n")]),
    ("multiline close on text", '\nFROM foo\nSYSTEM """\nThis is a\nmultiline system."""\n',
     [C("model", "foo"), C("system", "\nThis is a\nmultiline system.")]),
    ("multiline open on text", '\nFROM foo\nSYSTEM """This is a\nmultiline system."""\n',
     [C("model", "foo"), C("system", "This is a\nmultiline system.")]),
    ("triple quotes one line", '\nFROM foo\nSYSTEM """This is a multiline system."""\n',
     [C("model", "foo"), C("system", "This is a multiline system.")]),
    ("quotes inside", '\nFROM foo\nSYSTEM """\nThis is a multiline system with "quotes".\n"""\n',
     [C("model", "foo"), C("system", '\nThis is a multiline system with "quotes".\n')]),
    ("empty triple", '\nFROM foo\nSYSTEM """"""\n', [C("model", "foo"), C("system", "")]),
    ("empty double", '\nFROM foo\nSYSTEM ""\n', [C("model", "foo"), C("system", "")]),
    ("single quote char", "\nFROM foo\nSYSTEM \"'\"\n", [C("model", "foo"), C("system", "'")]),
    ("quote soup", '\nFROM foo\nSYSTEM """\'\'"\'""\'""\'"\'\'\'\'\'""\'""\'"""\n',
     [C("model", "foo"), C("system", "''\"'\"\"'\"\"'\"'''''\"\"'\"\"'")]),
    ("template at eof", '\nFROM foo\nTEMPLATE """\n{{ .Prompt }}\n"""', [C("model", "foo"), C("template", "\n{{ .Prompt }}\n")]),
    ("multi-line double quotes", 'FROM foo\nSYSTEM "line one\nline two"\n', [C("model", "foo"), C("system", "line one\nline two")]),
    ("tab inside value", "FROM foo\nSYSTEM a\tb\n", [C("model", "foo"), C("system", "a\tb")]),
    ("crlf", "FROM foo\r\nSYSTEM hi\r\n", [C("model", "foo"), C("system", "hi")]),
    ("multibyte", "FROM test\n\tSYSTEM 你好👋", [C("model", "test"), C("system", "你好👋")]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in PARSE_CASES], ids=[c[0] for c in PARSE_CASES])
def test_parse(text: str, expected: list[Command]) -> None:
    assert parse_modelfile(text).commands == expected


PARAMETER_CASES = {
    "numa true": ("numa", "true"),
    "num_ctx 1": ("num_ctx", "1"),
    "main_gpu 1": ("main_gpu", "1"),
    "use_mmap true": ("use_mmap", "true"),
    "top_p 1.0": ("top_p", "1.0"),
    "min_p 0.05": ("min_p", "0.05"),
    "penalize_newline true": ("penalize_newline", "true"),
    "stop ### User:": ("stop", "### User:"),
    "stop ### User: ": ("stop", "### User:"),
    'stop "### User:"': ("stop", "### User:"),
    'stop "### User: "': ("stop", "### User: "),
    'stop """### User:"""': ("stop", "### User:"),
    'stop """### User:\n"""': ("stop", "### User:\n"),
    "stop <|endoftext|>": ("stop", "<|endoftext|>"),
    "stop </s>": ("stop", "</s>"),
}


@pytest.mark.parametrize(("line", "expected"), PARAMETER_CASES.items(), ids=list(PARAMETER_CASES))
def test_parse_parameter(line: str, expected: tuple[str, str]) -> None:
    mf = parse_modelfile(f"FROM foo\nPARAMETER {line}\n")
    assert mf.commands == [C("model", "foo"), C(*expected)]


ERROR_CASES = [
    ("empty", "", "no FROM line", None),
    ("no from", "PARAMETER param1 value1", "no FROM line", None),
    ("parameter missing value", "\nFROM foo\nPARAMETER param1\n", "unexpected EOF: param1", None),
    ("bad command", "\nFROM foo\nBADCOMMAND param1 value1\n", ERR_INVALID_COMMAND, 3),
    ("command without value", "FROM\n", ERR_INVALID_COMMAND, 2),
    ("bad role", "\nFROM foo\nMESSAGE badguy I'm a bad guy!\n", ERR_INVALID_ROLE, 3),
    ("role is case-sensitive", "FROM foo\nMESSAGE User hi\n", ERR_INVALID_ROLE, 2),
    ("message without content", "\nFROM foo\nMESSAGE system\n", "unexpected EOF: system", None),
    ("message without content at eof", "\nFROM foo\nMESSAGE system", "unexpected EOF", None),
    (
        "unterminated triple",
        '\nFROM foo\nSYSTEM """This is a multiline system.""\n\t\t\t',
        "unexpected EOF",
        None,
    ),
    ("unterminated double", '\nFROM foo\nSYSTEM "\n\t\t\t', "unexpected EOF", None),
]


@pytest.mark.parametrize(
    ("text", "message", "line"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_parse_errors(text: str, message: str, line: int | None) -> None:
    with pytest.raises(ModelfileError) as info:
        parse_modelfile(text)
    assert info.value.message == message
    assert info.value.line == line
    assert str(info.value) == (f"(line {line}): {message}" if line else message)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-8"])
def test_decode_bom(encoding: str) -> None:
    text = "FROM bob\nPARAMETER param1 1\nSYSTEM You are a utf16 file. 你好👋\n"
    bom = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff", "utf-8": b"\xef\xbb\xbf"}[encoding]
    mf = parse_modelfile(decode_modelfile(bom + text.encode(encoding)))
    assert mf.commands == [C("model", "bob"), C("param1", "1"), C("system", "You are a utf16 file. 你好👋")]


# -- rendering --------------------------------------------------------------------------------------

ROUND_TRIP = [
    "\nFROM foo\nADAPTER adapter1\nLICENSE MIT\nPARAMETER param1 value1\nPARAMETER param2 value2\nTEMPLATE template1\n"
    "MESSAGE system You are a file parser. Always parse things.\nMESSAGE user Hey there!\n"
    "MESSAGE assistant Hello, I want to parse all the things!\n",
    '\nFROM foo\nADAPTER adapter1\nLICENSE MIT\nTEMPLATE template1\nMESSAGE system """\n'
    'You are a store greeter. Always respond with "Hello!".\n"""\nMESSAGE user Hey there!\n',
    '\nFROM foo\nLICENSE """\nVery long and boring legal text.\nBlah blah blah.\n"Oh look, a quote!"\n"""\n\n'
    "PARAMETER param1 value1\nTEMPLATE template1\n",
    '\nFROM foo\nSYSTEM ""\n',
    '\nFROM foo\nSYSTEM "  padded  "\nPARAMETER stop "<|im_end|>"\nPARAMETER stop "\\n\\n"\n',
    'FROM foo\nTEMPLATE """{{ if .System }}\n{{ .System }}{{ end }}"""\n',
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip(text: str) -> None:
    mf = parse_modelfile(text)
    assert parse_modelfile(str(mf)) == mf


RENDER_CASES = [
    (C("model", "/models/blobs/sha256-abc"), "FROM /models/blobs/sha256-abc"),
    (C("template", "{{ .Prompt }}"), "TEMPLATE {{ .Prompt }}"),
    (C("template", "{{ .System }}\n{{ .Prompt }}"), 'TEMPLATE "{{ .System }}\n{{ .Prompt }}"'),
    (C("system", 'Say "hi".\nThen stop.'), 'SYSTEM """Say "hi".\nThen stop."""'),
    (C("system", " leading"), 'SYSTEM " leading"'),
    (C("license", "MIT"), "LICENSE MIT"),
    (C("adapter", "/a b"), "ADAPTER /a b"),
    (C("requires", "0.14.0"), "REQUIRES 0.14.0"),
    (C("message", "user: Hey there!"), "MESSAGE user Hey there!"),
    (C("message", 'assistant: "quoted"\nline'), 'MESSAGE assistant """"quoted"\nline"""'),
    (C("stop", "<|im_end|>"), "PARAMETER stop <|im_end|>"),
    (C("temperature", "0.2"), "PARAMETER temperature 0.2"),
]


@pytest.mark.parametrize(("command", "line"), RENDER_CASES)
def test_render_command(command: Command, line: str) -> None:
    assert str(command) == line


def test_render_modelfile() -> None:
    mf = Modelfile([C("model", "llama3"), C("system", "be brief"), C("stop", "a"), C("stop", "b")])
    assert str(mf) == "FROM llama3\nSYSTEM be brief\nPARAMETER stop a\nPARAMETER stop b\n"


# -- parameter values -------------------------------------------------------------------------------

VALUE_CASES: list[tuple[str, str, Any]] = [
    ("num_ctx", "4096", 4096),
    ("num_predict", "-1", -1),
    ("seed", "+42", 42),
    ("main_gpu", "1", 1),
    ("temperature", "0.5", 0.5),
    ("top_p", "1", 1.0),
    ("min_p", "5e-2", 0.05),
    ("use_mmap", "true", True),
    ("use_mmap", "F", False),
    ("use_mmap", "0", False),
    ("stop", "<|im_end|>", ["<|im_end|>"]),
    ("stop", "### User: ", ["### User: "]),
]


@pytest.mark.parametrize(("name", "text", "value"), VALUE_CASES)
def test_parameter_value(name: str, text: str, value: Any) -> None:
    got = parameter_value(name, text)
    assert got == value and type(got) is type(value)


VALUE_ERRORS = [
    ("numa", "true", "unknown parameter 'numa'"),
    ("penalize_newline", "true", "unknown parameter 'penalize_newline'"),
    ("num_ctx", "4k", "invalid int value [4k]"),
    ("num_ctx", "1.5", "invalid int value [1.5]"),
    ("num_ctx", "1_000", "invalid int value [1_000]"),
    ("num_ctx", "99999999999999999999", "invalid int value [99999999999999999999]"),
    ("temperature", "hot", "invalid float value [hot]"),
    ("temperature", "1e39", "invalid float value [1e39]"),
    ("use_mmap", "yes", "invalid bool value [yes]"),
]


@pytest.mark.parametrize(("name", "text", "message"), VALUE_ERRORS)
def test_parameter_value_errors(name: str, text: str, message: str) -> None:
    with pytest.raises(ModelfileError, match=f"^{re.escape(message)}$"):
        parameter_value(name, text)


def test_options_schema() -> None:
    assert set(RUNNER_OPTIONS) == {
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "use_mmap",
        "num_thread",
        "draft_num_predict",
    }
    assert OPTIONS["stop"].type is OptionType.STRING_LIST and OPTIONS["use_mmap"].nullable
    defaults = default_options()
    assert defaults["temperature"] == 0.8 and defaults["top_k"] == 40 and defaults["repeat_penalty"] == 1.0
    assert "num_ctx" not in defaults and "stop" not in defaults
    assert coerce_option("num_ctx", 2048.9) == 2048
    assert coerce_option("temperature", 1) == 1.0
    assert coerce_option("stop", ["a"]) == ["a"]
    for name, value, kind in [
        ("num_ctx", "2048", "type integer"),
        ("num_ctx", True, "type integer"),
        ("use_mmap", 1, "type boolean"),
        ("top_p", "0.9", "type float32"),
        ("stop", "a", "type array"),
        ("stop", [1], "an array of strings"),
    ]:
        with pytest.raises(ValueError, match=f'^option "{name}" must be of {kind}$'):
            coerce_option(name, value)


# -- create requests --------------------------------------------------------------------------------


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _write(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


CREATE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("FROM test", {"from": "test"}),
    ("FROM test\nTEMPLATE some template\n", {"from": "test", "template": "some template"}),
    (
        "FROM test\nLICENSE single license\nPARAMETER temperature 0.5\nMESSAGE user Hello\n",
        {"from": "test", "license": ["single license"], "parameters": {"temperature": 0.5},
         "messages": [{"role": "user", "content": "Hello"}]},
    ),
    (
        "FROM test\nPARAMETER temperature 0.5\nPARAMETER top_k 1\nSYSTEM You are a bot.\nLICENSE license1\n"
        "LICENSE license2\nMESSAGE user Hello there!\nMESSAGE assistant Hi! How are you?\n",
        {"from": "test", "license": ["license1", "license2"], "system": "You are a bot.",
         "parameters": {"temperature": 0.5, "top_k": 1},
         "messages": [{"role": "user", "content": "Hello there!"}, {"role": "assistant", "content": "Hi! How are you?"}]},
    ),
    (
        'FROM test\nPARAMETER stop <|im_end|>\nPARAMETER stop "\n"\nPARAMETER top_k 1\nPARAMETER top_k 2\n',
        {"from": "test", "parameters": {"stop": ["<|im_end|>", "\n"], "top_k": 2}},
    ),
    ('FROM test\nSYSTEM ""\nTEMPLATE ""\n', {"from": "test"}),
    ("FROM test\nREQUIRES 0.14.0\nRENDERER qwen3\nPARSER qwen3\n", {"from": "test", "requires": "0.14.0", "renderer": "qwen3", "parser": "qwen3"}),
    ("FROM test\nREQUIRES v0.14\n", {"from": "test", "requires": "0.14"}),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), CREATE_CASES)
def test_create_request(text: str, expected: dict[str, Any], tmp_path: Path) -> None:
    request, uploads = to_create_request(parse_modelfile(text), tmp_path)
    assert request == expected
    assert uploads == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM test\nREQUIRES latest\n", "requires must be a valid semver (e.g. 0.14.0)"),
        ("FROM test\nPARAMETER numa true\n", "unknown parameter 'numa'"),
        ("FROM test\nPARAMETER top_k many\n", "invalid int value [many]"),
        ("FROM test\nADAPTER ./missing.gguf\n", "stat {dir}/missing.gguf: no such file or directory"),
    ],
)
def test_create_request_errors(text: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ModelfileError, match=f"^{re.escape(message.format(dir=tmp_path))}$"):
        to_create_request(parse_modelfile(text), tmp_path)


def test_create_request_deprecated_parameter_warns(tmp_path: Path) -> None:
    warnings: list[str] = []
    mf = parse_modelfile(
        "FROM test\nPARAMETER penalize_newline true\nPARAMETER mirostat 1\nPARAMETER seed 1\n"
    )
    request, _ = to_create_request(mf, tmp_path, warn=warnings.append)
    assert request == {"from": "test", "parameters": {"seed": 1}}
    assert warnings == [
        "warning: parameter penalize_newline is deprecated",
        "warning: parameter mirostat is deprecated",
    ]


def test_create_request_gguf_files(tmp_path: Path) -> None:
    gguf = b"GGUF\x03\x00\x00\x00" + bytes(range(256))
    _write(
        tmp_path, {"models/smol.gguf": gguf, "adapters/lora.gguf": gguf[:100], "other.gguf": b"GGUF\x00\x01"}
    )
    mf = parse_modelfile("FROM ./models/smol.gguf\nFROM other.gguf\nADAPTER adapters/lora.gguf\n")
    request, uploads = to_create_request(mf, tmp_path)
    # Two FROM files: names relative to their common directory, as Ollama's createRequestFileNames.
    assert request["files"] == {"models/smol.gguf": _digest(gguf), "other.gguf": _digest(b"GGUF\x00\x01")}
    assert request["adapters"] == {"lora.gguf": _digest(gguf[:100])}
    assert "from" not in request
    assert uploads == [
        tmp_path / "models/smol.gguf",
        tmp_path / "other.gguf",
        tmp_path / "adapters/lora.gguf",
    ]


def test_create_request_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    _write(tmp_path, {"m/model.gguf": b"GGUF\x00\x01"})
    request, uploads = to_create_request(parse_modelfile("FROM ~/m/model.gguf"), "/nonexistent")
    assert request == {"files": {"model.gguf": _digest(b"GGUF\x00\x01")}}
    assert uploads == [tmp_path / "m/model.gguf"]


def test_create_request_directory_uses_digest_callback(tmp_path: Path) -> None:
    _write(
        tmp_path, {"model.safetensors": b"weights", "config.json": b"{}", "1_Pooling/config.json": b'{"a":1}'}
    )
    seen: list[Path] = []

    def digest(path: Path) -> str:
        seen.append(path)
        return "sha256:" + "0" * 63 + str(len(seen))

    request, uploads = to_create_request(parse_modelfile("FROM ."), tmp_path, digest=digest)
    assert request["files"] == {
        "model.safetensors": "sha256:" + "0" * 63 + "1",
        "config.json": "sha256:" + "0" * 63 + "2",
        "1_Pooling/config.json": "sha256:" + "0" * 63 + "3",
    }
    assert uploads == seen


def test_create_request_draft_rejects_same_path(tmp_path: Path) -> None:
    _write(tmp_path, {"model.gguf": b"GGUF" + bytes(600)})
    with pytest.raises(ModelfileError, match="DRAFT must not reference the same local path as FROM"):
        to_create_request(parse_modelfile("FROM ./model.gguf\nDRAFT ./model.gguf\n"), tmp_path)


# -- files_for_model ---------------------------------------------------------------------------------

BINARY = bytes(range(256)) * 2
ZIP = b"PK\x03\x04" + bytes(100)

FILES_CASES: list[tuple[str, dict[str, bytes], list[str]]] = [
    (
        "safetensors shards",
        {"model-00001-of-00002.safetensors": b"x", "model-00002-of-00002.safetensors": b"x", "config.json": b"{}",
         "tokenizer.json": b"{}", "chat_template.jinja": b"{{ x }}", "README.md": b"# hi"},
        ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "config.json", "tokenizer.json",
         "chat_template.jinja"],
    ),
    (
        "tokenizer.model binary",
        {"model-00001-of-00001.safetensors": b"x", "config.json": b"{}", "tokenizer.model": BINARY},
        ["model-00001-of-00001.safetensors", "config.json", "tokenizer.model"],
    ),
    (
        "sentence-transformers modules",
        {"model.safetensors": b"x", "config.json": b"{}", "modules.json": b"[]", "1_Pooling/config.json": b"{}",
         "2_Dense/config.json": b"{}", "2_Dense/model.safetensors": b"x", "vocab.txt": b"[PAD]\n",
         "sentence_bert_config.json": b"{}", ".cache/huggingface/x.json": b"{}"},
        ["model.safetensors", "2_Dense/model.safetensors", "config.json", "modules.json", "sentence_bert_config.json",
         "1_Pooling/config.json", "2_Dense/config.json", "vocab.txt"],
    ),
    (
        "bpe tokenizer files",
        {"model.safetensors": b"x", "vocab.json": b"{}", "merges.txt": b"#version", "spiece.model": BINARY,
         "qwen.tiktoken": b"a 1"},
        ["model.safetensors", "vocab.json", "merges.txt", "qwen.tiktoken", "spiece.model"],
    ),
    ("prefers model over consolidated", {"model-00001-of-00001.safetensors": b"x", "consolidated.safetensors": b"x", "config.json": b"{}"},
     ["model-00001-of-00001.safetensors", "config.json"]),
    ("consolidated", {"consolidated.safetensors": b"x", "config.json": b"{}"}, ["consolidated.safetensors", "config.json"]),
    ("pytorch zip", {"pytorch_model-00001-of-00002.bin": ZIP, "pytorch_model-00002-of-00002.bin": ZIP, "config.json": b'{"a": 1}'},
     ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "config.json"]),
    ("consolidated pth", {"consolidated.00.pth": ZIP, "consolidated.01.pth": ZIP, "config.json": b"{}"},
     ["consolidated.00.pth", "consolidated.01.pth", "config.json"]),
    ("gguf", {"model.gguf": BINARY, "config.json": b"{}"}, ["model.gguf", "config.json"]),
    ("bin as gguf", {"model.bin": BINARY, "config.json": b"{}"}, ["model.bin", "config.json"]),
]  # fmt: skip


@pytest.mark.parametrize(("files", "expected"), [c[1:] for c in FILES_CASES], ids=[c[0] for c in FILES_CASES])
def test_files_for_model(files: dict[str, bytes], expected: list[str], tmp_path: Path) -> None:
    _write(tmp_path, files)
    assert [p.relative_to(tmp_path).as_posix() for p in files_for_model(tmp_path)] == expected


@pytest.mark.parametrize(
    "files",
    [
        {"README.md": b"x", "config.json": b"{}"},
        {"pytorch_model.bin": b"plain text content", "config.json": b"{}"},
    ],
    ids=["no weights", "pytorch text is an lfs pointer"],
)
def test_files_for_model_no_weights(files: dict[str, bytes], tmp_path: Path) -> None:
    _write(tmp_path, files)
    with pytest.raises(ModelfileError, match=r"^no Modelfile or safetensors files found$"):
        files_for_model(tmp_path)


def test_minilm_directory(minilm_dir: Path) -> None:
    names = {p.relative_to(minilm_dir).as_posix() for p in files_for_model(minilm_dir)}
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "modules.json",
        "1_Pooling/config.json",
    } <= names


def test_adapter_lines_stack(tmp_path: Path) -> None:
    """Several ADAPTER directories are all sent (Ollama keeps only the last): each under its own name."""
    _write(tmp_path, {
        "lora-a/adapter_config.json": b"{}", "lora-a/adapter_model.safetensors": b"A",
        "lora-b/adapter_config.json": b"{ }", "lora-b/adapter_model.safetensors": b"B",
    })
    mf = parse_modelfile("FROM base\nADAPTER ./lora-a\nADAPTER ./lora-b\n")
    request, uploads = to_create_request(mf, tmp_path)
    assert request["adapters"] == {
        "lora-a/adapter_config.json": _digest(b"{}"), "lora-a/adapter_model.safetensors": _digest(b"A"),
        "lora-b/adapter_config.json": _digest(b"{ }"), "lora-b/adapter_model.safetensors": _digest(b"B"),
    }
    assert len(uploads) == 4
