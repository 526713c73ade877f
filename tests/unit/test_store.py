"""The store: write-once blobs, atomic manifests, case-insensitive names, reference-counted deletes."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from ollama_torch.errors import BadRequest, ModelNotFound
from ollama_torch.names import ModelName
from ollama_torch.store import ConfigV2, Layer, Manifest, MediaType, ModelStore, parse_digest
from ollama_torch.store.blobs import TEMP_PREFIX


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture()
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def make_model(store: ModelStore, name: str, *payloads: bytes, config: ConfigV2 | None = None) -> Manifest:
    layers = []
    for data in payloads:
        digest = store.blobs.write_bytes(data)
        layers.append(Layer(MediaType.TENSOR, digest, len(data), name=f"{digest[7:15]}.safetensors"))
    cfg = (config or ConfigV2(model_format="safetensors", model_family="llama")).to_bytes()
    cfg_digest = store.blobs.write_bytes(cfg)
    manifest = Manifest(Layer(MediaType.CONFIG, cfg_digest, len(cfg)), tuple(layers))
    store.write_manifest(ModelName.parse(name), manifest)
    return manifest


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("sha256:" + "a" * 64, True),
        ("sha256-" + "A" * 64, True),
        ("sha256:" + "a" * 63, False),
        ("sha256:" + "g" * 64, False),
        ("sha512:" + "a" * 64, False),
        ("sha256:../../" + "a" * 58, False),
        ("", False),
    ],
)
def test_parse_digest(text: str, ok: bool) -> None:
    if ok:
        assert parse_digest(text) == "sha256:" + text[7:].lower()
    else:
        with pytest.raises(BadRequest, match="invalid digest format"):
            parse_digest(text)


def test_blob_write_commit_and_layout(store: ModelStore) -> None:
    digest = store.blobs.write_bytes(b"hello")
    assert digest == sha(b"hello")
    assert (store.root / "blobs" / ("sha256-" + digest[7:])).read_bytes() == b"hello"
    assert not [p for p in store.blobs.root.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_blob_digest_mismatch_leaves_nothing(store: ModelStore) -> None:
    expected = sha(b"right")
    with pytest.raises(BadRequest, match="digest mismatch"), store.blobs.writer(expected) as w:
        w.write(b"wrong")
        w.commit()
    assert not store.blobs.exists(expected)
    assert list(store.blobs.root.iterdir()) == []


def test_blob_interrupted_write_leaves_nothing(store: ModelStore) -> None:
    expected = sha(b"complete data")
    with pytest.raises(RuntimeError), store.blobs.writer(expected) as w:
        w.write(b"complete")
        raise RuntimeError("connection dropped")
    assert list(store.blobs.root.iterdir()) == []


def test_manifest_round_trip_matches_go_encoding(store: ModelStore) -> None:
    manifest = make_model(store, "m", b"weights")
    raw = store.manifest_path(ModelName.parse("m")).read_bytes()
    assert raw.endswith(b"}\n")
    data = json.loads(raw)
    assert list(data) == ["schemaVersion", "mediaType", "config", "layers"]
    assert data["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert Manifest.from_bytes(raw) == manifest


def test_config_keeps_unknown_keys() -> None:
    raw = b'{"model_format":"gguf","model_family":"llama","rootfs":{"type":"layers"},"architecture":"amd64","os":"linux"}'
    cfg = ConfigV2.from_bytes(raw)
    assert cfg.extra == {"rootfs": {"type": "layers"}}
    assert json.loads(cfg.to_bytes())["rootfs"] == {"type": "layers"}


def test_case_insensitive_resolve(store: ModelStore) -> None:
    make_model(store, "MyModel:Tag", b"w")
    resolved = store.resolve(ModelName.parse("mymodel:TAG"))
    assert resolved is not None and resolved.model == "MyModel" and resolved.tag == "Tag"
    assert store.get(ModelName.parse("MYMODEL:tag")).name.model == "MyModel"
    # writing under another case reuses the existing spelling rather than forking a second model
    make_model(store, "mymodel:tag", b"w2")
    assert len(store.list()) == 1


def test_missing_model(store: ModelStore) -> None:
    with pytest.raises(ModelNotFound, match="model 'nope:latest' not found"):
        store.get(ModelName.parse("nope"))


def test_delete_keeps_shared_blobs(store: ModelStore) -> None:
    a = make_model(store, "a", b"shared", b"only-a")
    make_model(store, "b", b"shared", b"only-b")
    store.delete(ModelName.parse("a"))
    assert store.blobs.exists(sha(b"shared"))
    assert not store.blobs.exists(sha(b"only-a"))
    assert store.blobs.exists(sha(b"only-b"))
    assert not store.exists(ModelName.parse("a"))
    assert a.config.digest in store.referenced_digests()  # same config content is shared by b
    assert not (store.manifests_dir / "registry.ollama.ai" / "library" / "a").exists()


def test_copy_is_byte_identical_and_shares_blobs(store: ModelStore) -> None:
    make_model(store, "src", b"w")
    store.copy(ModelName.parse("src"), ModelName.parse("ns/dst:v1"))
    raw_src = store.manifest_path(ModelName.parse("src")).read_bytes()
    raw_dst = store.manifest_path(ModelName.parse("ns/dst:v1")).read_bytes()
    assert raw_src == raw_dst
    store.delete(ModelName.parse("src"))
    assert store.blobs.exists(sha(b"w"))


def test_replacing_manifest_prunes_old_layers(store: ModelStore) -> None:
    make_model(store, "m", b"v1")
    make_model(store, "m", b"v2")
    assert not store.blobs.exists(sha(b"v1"))
    assert store.blobs.exists(sha(b"v2"))


def test_write_manifest_requires_blobs(store: ModelStore) -> None:
    missing = Layer(MediaType.TENSOR, sha(b"never written"), 13)
    cfg = store.blobs.write_bytes(b"{}")
    with pytest.raises(Exception, match="not found"):
        store.write_manifest(ModelName.parse("m"), Manifest(Layer(MediaType.CONFIG, cfg, 2), (missing,)))
    assert not store.exists(ModelName.parse("m"))


def test_list_sorted_newest_first_and_skips_invalid(store: ModelStore) -> None:
    make_model(store, "old", b"1")
    time.sleep(0.01)
    make_model(store, "new", b"2")
    junk = store.manifests_dir / "registry.ollama.ai" / "library" / "bad" / ".hidden"
    junk.parent.mkdir(parents=True)
    junk.write_text("{}")
    names = [m.name.model for m in store.list()]
    assert names == ["new", "old"]


def test_prune_respects_grace_and_references(store: ModelStore) -> None:
    make_model(store, "m", b"kept")
    orphan = store.blobs.write_bytes(b"orphan")
    (store.blobs.root / f"{TEMP_PREFIX}stale").write_bytes(b"half")
    assert store.prune(grace_seconds=3600) == 0
    assert store.blobs.exists(orphan)
    assert not (store.blobs.root / f"{TEMP_PREFIX}stale").exists()
    assert store.prune(grace_seconds=0) == 1
    assert not store.blobs.exists(orphan)
    assert store.blobs.exists(sha(b"kept"))


def test_derived_artifacts_follow_their_blob(store: ModelStore) -> None:
    make_model(store, "m", b"gguf-ish")
    derived = store.derived_dir(sha(b"gguf-ish"))
    derived.mkdir(parents=True)
    (derived / "config.json").write_text("{}")
    store.delete(ModelName.parse("m"))
    assert not derived.exists()
