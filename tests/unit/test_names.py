"""Model names: the cases of Ollama's types/model/name_test.go, as tables."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ollama_torch.names import DIGEST, HOST, MODEL, NAMESPACE, ModelName, is_valid_part

P80 = "8" * 80
P350 = "3" * 350

PARSE_PARTS = [
    ("registry.ollama.ai/library/dolphin-mistral:7b-v2.6-dpo-laser-q6_K",
     ModelName("registry.ollama.ai", "library", "dolphin-mistral", "7b-v2.6-dpo-laser-q6_K"),
     ("registry.ollama.ai", "library", "dolphin-mistral", "7b-v2.6-dpo-laser-q6_K")),
    ("scheme://host:port/namespace/model:tag",
     ModelName("host:port", "namespace", "model", "tag", scheme="scheme"), ("host:port", "namespace", "model", "tag")),
    ("host/namespace/model:tag", ModelName("host", "namespace", "model", "tag"), ("host", "namespace", "model", "tag")),
    ("host:port/namespace/model:tag", ModelName("host:port", "namespace", "model", "tag"), ("host:port", "namespace", "model", "tag")),
    ("host/namespace/model", ModelName("host", "namespace", "model"), ("host", "namespace", "model", "latest")),
    ("host:port/namespace/model", ModelName("host:port", "namespace", "model"), ("host:port", "namespace", "model", "latest")),
    ("namespace/model", ModelName(namespace="namespace", model="model"), ("registry.ollama.ai", "namespace", "model", "latest")),
    ("model", ModelName(model="model"), ("registry.ollama.ai", "library", "model", "latest")),
    ("h/nn/mm:t", ModelName("h", "nn", "mm", "t"), ("h", "nn", "mm", "t")),
    (f"{P80}/{P80}/{P80}:{P80}", ModelName(P80, P80, P80, P80), (P80, P80, P80, P80)),
    (f"{P350}/{P80}/{P80}:{P80}", ModelName(P350, P80, P80, P80), (P350, P80, P80, P80)),
]


@pytest.mark.parametrize(("text", "bare", "parts"), PARSE_PARTS)
def test_parse_name_parts(text: str, bare: ModelName, parts: tuple[str, ...]) -> None:
    assert ModelName.parse_bare(text) == bare
    assert ModelName.parse(text).parts == parts


VALIDITY = {
    "": False,
    "_why/_the/_lucky:_stiff": True,
    "h/n/m:t": True,
    "host/namespace/model:tag": True,
    "host/namespace/model": False,
    "namespace/model": False,
    "model": False,
    f"{P80}/{P80}/{P80}:{P80}": True,
    f"{P350}/{P80}/{P80}:{P80}": True,
    "h/nn/mm:t": True,
    "m": False,
    "n/m:": False,
    "h/n/m": False,
    "@t": False,
    "m@d": False,
    "^": False,
    "mm:": False,
    "/nn/mm": False,
    "//": False,
    "//mm": False,
    "hh//": False,
    "//mm:@": False,
    "00@": False,
    "@": False,
    "-hh/nn/mm:tt": False,
    "hh/-nn/mm:tt": False,
    "hh/nn/-mm:tt": False,
    "hh/nn/mm:-tt": False,
    "host:https/namespace/model:tag": True,
    "host/name:space/model:tag": False,
}


@pytest.mark.parametrize(("text", "valid"), sorted(VALIDITY.items()))
def test_name_is_valid(text: str, valid: bool) -> None:
    name = ModelName.parse_bare(text)
    assert name.is_valid is valid
    if valid:
        assert str(name) == text


@pytest.mark.parametrize(
    ("kind", "text", "valid"),
    [
        (HOST, "", False),
        (HOST, "a", True),
        (HOST, "a.", True),
        (HOST, "a.b", True),
        (HOST, "a:123", True),
        (HOST, "a:123/aa/bb", False),
        (NAMESPACE, "bb", True),
        (NAMESPACE, "a.", False),
        (MODEL, "-h", False),
        (DIGEST, "sha256-1000000000000000000000000000000000000000000000000000000000000000", True),
    ],
)
def test_is_valid_part(kind: int, text: str, valid: bool) -> None:
    assert is_valid_part(kind, text) is valid


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("host", "namespace", "model", "tag"), ModelName("host", "namespace", "model", "tag")),
        (("host:port", "namespace", "model", "tag"), ModelName("host:port", "namespace", "model", "tag")),
        (("namespace", "model", "tag"), None),
        (("model", "tag"), None),
        (("model",), None),
        (("..", "..", "model", "tag"), None),
        (("", "namespace", ".", "tag"), None),
        ((".", ".", ".", "."), None),
        (("/", "path", "to", "random"), None),
    ],
)
def test_from_path_parts(parts: tuple[str, ...], expected: ModelName | None) -> None:
    assert ModelName.from_path_parts(parts) == expected


@pytest.mark.parametrize(
    ("text", "short"),
    [
        ("registry.ollama.ai/library/model:latest", "model:latest"),
        ("registry.ollama.ai/library/model:tag", "model:tag"),
        ("registry.ollama.ai/namespace/model:tag", "namespace/model:tag"),
        ("host/namespace/model:tag", "host/namespace/model:tag"),
        ("host/library/model:tag", "host/library/model:tag"),
    ],
)
def test_display_shortest(text: str, short: str) -> None:
    assert ModelName.parse_bare(text).display_shortest == short


def test_default_name() -> None:
    assert str(ModelName.parse("xx")) == "registry.ollama.ai/library/xx:latest"


@pytest.mark.parametrize("text", ["../../etc/passwd", "a/../b", "..", "a/b/../../c:d", "x:../y", "a\\b", "a/b/c/d/e"])
def test_traversal_attempts_are_invalid(text: str) -> None:
    assert not ModelName.parse(text).is_valid


@given(st.text(max_size=60))
def test_valid_names_round_trip_and_never_traverse(text: str) -> None:
    name = ModelName.parse_bare(text)
    if name.is_valid:
        assert str(name) == text
        for part in name.parts:
            assert part not in ("..", ".") and "/" not in part and len(part) <= 350


def test_case_insensitive_key() -> None:
    assert ModelName.parse("Foo/Bar:Baz").key() == ModelName.parse("foo/bar:baz").key()
