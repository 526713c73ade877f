"""The registry client's pure parts and the partial-download records: table tests, no network."""

from __future__ import annotations

import errno
import json
import socket
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest

from ollama_torch.names import ModelName
from ollama_torch.registry import InsecureProtocol, RegistryClient, TransferOptions
from ollama_torch.registry.client import MB, dial_error, error_detail, parse_challenge
from ollama_torch.registry.download import BlobDownload, Part, partial_path
from ollama_torch.store import BlobStore

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://ollama.com/token",service="ollama.com",scope="repository:library/x:pull"',
            {"": "bearer", "realm": "https://ollama.com/token", "service": "ollama.com", "scope": "repository:library/x:pull"},
        ),
        (
            'Bearer realm="https://auth.docker.io/token", service="registry.docker.io", scope="repository:a/b:pull,push"',
            {"": "bearer", "realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:a/b:pull,push"},
        ),
        ('Basic realm="basic-realm"', {"": "basic", "realm": "basic-realm"}),
        ("Bearer realm=http://h/token,service=s", {"": "bearer", "realm": "http://h/token", "service": "s"}),
        ("", {"": ""}),
    ],
)  # fmt: skip
def test_parse_challenge(header: str, expected: dict[str, str]) -> None:
    assert parse_challenge(header) == expected


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (403, b'{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}', "403: requested access to the resource is denied"),
        (500, b"boom\n", "500: boom"),
        (502, b"", "502"),
        (400, b'{"errors":[{"code":"MANIFEST_INVALID"},{"code":"X","message":"y"}]}', "400: MANIFEST_INVALID; y"),
    ],
)  # fmt: skip
def test_error_detail(status: int, body: bytes, expected: str) -> None:
    assert error_detail(status, body) == expected


def connector_error(host: str, port: int, os_error: OSError) -> aiohttp.ClientConnectorError:
    key = SimpleNamespace(host=host, port=port, ssl=True, is_ssl=False)
    return aiohttp.ClientConnectorError(key, os_error)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        # not retried: Go's dial error text, as Ollama prints it
        (connector_error("nosuchhost.invalid", 443, socket.gaierror(socket.EAI_NONAME, "Name or service not known")),
         "dial tcp: lookup nosuchhost.invalid: no such host"),
        (connector_error("h.example", 443, socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")),
         "dial tcp: lookup h.example: temporary failure in name resolution"),
        (connector_error("127.0.0.1", 1, ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed")),
         "dial tcp 127.0.0.1:1: connect: connection refused"),
        (connector_error("::1", 8080, ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed")),
         "dial tcp [::1]:8080: connect: connection refused"),
        (connector_error("localhost", 1, OSError(errno.ECONNREFUSED, "Multiple exceptions")),
         "dial tcp localhost:1: connect: connection refused"),
        # transient: retried
        (connector_error("10.0.0.1", 443, OSError(errno.ENETUNREACH, "Network is unreachable")), ""),
        (aiohttp.ServerDisconnectedError(), ""),
        (aiohttp.ClientPayloadError("connection closed"), ""),
        (TimeoutError(), ""),
    ],
)
def test_dial_error(exc: BaseException, expected: str) -> None:
    assert dial_error(exc) == expected


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (0, 100 * MB),
        (1, 100 * MB),
        (2_019_377_376, 2_019_377_376 // 16),  # llama3.2's model layer: 16 parts of ~126 MB
        (16 * 100 * MB, 100 * MB),
        (100 * 1000 * MB, 1000 * MB),  # clamped: more than 16 parts for very large blobs
    ],
)
def test_part_size_is_ollamas_clamp(total: int, expected: int) -> None:
    assert TransferOptions().part_size(total) == expected


@pytest.mark.parametrize(
    ("name", "insecure", "base_url"),
    [
        ("127.0.0.1:5000/library/smol:latest", True, "http://127.0.0.1:5000"),
        ("127.0.0.1:5000/library/smol:latest", False, "https://127.0.0.1:5000"),
        ("http://127.0.0.1:5000/library/smol:latest", True, "http://127.0.0.1:5000"),
        ("https://example.com/a/b:c", True, "http://example.com"),  # Ollama rewrites to http
        ("llama3.2", False, "https://registry.ollama.ai"),
    ],
)
def test_base_url(name: str, insecure: bool, base_url: str) -> None:
    client = RegistryClient(ModelName.parse(name), insecure=insecure)
    assert client.base_url == base_url
    n = ModelName.parse(name)
    assert client.manifest_url() == f"{base_url}/v2/{n.namespace}/{n.model}/manifests/{n.tag}"
    assert client.blob_url(DIGEST) == f"{base_url}/v2/{n.namespace}/{n.model}/blobs/{DIGEST}"


def test_http_scheme_without_insecure_is_refused() -> None:
    with pytest.raises(InsecureProtocol, match=r"^insecure protocol http$"):
        RegistryClient(ModelName.parse("http://127.0.0.1:5000/library/smol:latest"), insecure=False)


@pytest.mark.parametrize(
    ("location", "base", "expected"),
    [
        ("/v2/a/b/blobs/uploads/u?_state=x", "http://h:1/v2/a/b/blobs/uploads/", "http://h:1/v2/a/b/blobs/uploads/u?_state=x"),
        ("https://h:1/v2/a/b/blobs/uploads/u", "http://h:1/v2/a/b/blobs/uploads/", "http://h:1/v2/a/b/blobs/uploads/u"),
        ("https://cdn.example/x", "https://h/v2/a/b/blobs/d", "https://cdn.example/x"),
    ],
)  # fmt: skip
def test_locations_resolve_relative_and_keep_insecure_http(location: str, base: str, expected: str) -> None:
    insecure = base.startswith("http://")
    client = RegistryClient(ModelName.parse("h:1/a/b:c"), insecure=insecure)
    assert client.resolve(location, base) == expected


# -- partial-download records --------------------------------------------------------------------------------
def test_partial_names_and_records_are_ollamas(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    dl = BlobDownload(blobs, DIGEST, TransferOptions(min_part_size=40, max_part_size=40))
    dl.create(100)
    assert partial_path(blobs, DIGEST).name == "sha256-" + "ab" * 32 + "-partial"
    assert sorted(p.name for p in dl.part_files()) == [f"sha256-{'ab' * 32}-partial-{n}" for n in range(3)]
    records = [json.loads(dl.part_file(n).read_text()) for n in range(3)]
    assert records == [
        {"N": 0, "Offset": 0, "Size": 40, "Completed": 0},
        {"N": 1, "Offset": 40, "Size": 40, "Completed": 0},
        {"N": 2, "Offset": 80, "Size": 20, "Completed": 0},
    ]
    assert dl.partial.stat().st_size == 100
    assert not blobs.exists(DIGEST)


def test_resumed_download_adopts_its_records(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    first = BlobDownload(blobs, DIGEST, TransferOptions(min_part_size=40, max_part_size=40))
    first.create(100)
    first.parts[1].completed = 25
    first.save(first.parts[1])
    again = BlobDownload(blobs, DIGEST, TransferOptions())  # other options: the records decide
    assert again.load()
    assert (again.total, again.completed, [p.start for p in again.parts]) == (100, 25, [0, 65, 80])


@pytest.mark.parametrize(
    "records",
    [
        [
            {"N": 0, "Offset": 0, "Size": 40, "Completed": 0},
            {"N": 1, "Offset": 50, "Size": 50, "Completed": 0},
        ],
        [{"N": 0, "Offset": 0, "Size": 100, "Completed": 101}],
        [{"N": 0, "Offset": 0, "Size": 90, "Completed": 0}],  # the data file is 100 bytes
        "not json",
    ],
)
def test_inconsistent_records_start_over(tmp_path: Path, records: object) -> None:
    blobs = BlobStore(tmp_path)
    dl = BlobDownload(blobs, DIGEST, TransferOptions())
    dl.partial.write_bytes(b"\0" * 100)
    if isinstance(records, list):
        for record in records:
            dl.part_file(record["N"]).write_text(json.dumps(record))
    else:
        dl.part_file(0).write_text(str(records))
    assert not dl.load()
    assert dl.part_files() == [] and not dl.partial.exists()


def test_part_json_round_trip() -> None:
    part = Part(3, 300, 100, 42)
    assert Part.from_json(part.to_json()) == part
    assert (part.start, part.stop, part.done) == (342, 400, False)
