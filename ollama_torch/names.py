"""Model names as a value type, with Ollama's parsing and validity rules (``types/model/name.go``).

A name is parsed and validated before any path is built from it: every part must start with
``[A-Za-z0-9_]`` and continue with ``[A-Za-z0-9_-]`` (plus ``.`` outside the namespace and ``:`` in the
host), so ``..``, ``/`` and empty parts can never reach the file system.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import PurePath

from .errors import BadRequest

MISSING_PART = "!MISSING!"
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
DEFAULT_SCHEME = "https"

HOST, NAMESPACE, MODEL, TAG, DIGEST = range(5)


def _is_alnum_or_underscore(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c == "_"


def is_valid_part(kind: int, s: str) -> bool:
    max_len = 350 if kind == HOST else 80
    if not 1 <= len(s) <= max_len:
        return False
    for i, c in enumerate(s):
        if i == 0:
            if not _is_alnum_or_underscore(c):
                return False
            continue
        if c in "_-":
            continue
        if c == ".":
            if kind == NAMESPACE:
                return False
            continue
        if c == ":":
            if kind not in (HOST, DIGEST):
                return False
            continue
        if not _is_alnum_or_underscore(c):
            return False
    return True


def _cut_last(s: str, sep: str) -> tuple[str, str, bool]:
    i = s.rfind(sep)
    if i < 0:
        return s, "", False
    return s[:i], s[i + len(sep) :], True


def _cut_promised(s: str, sep: str) -> tuple[str, str, bool]:
    before, after, ok = _cut_last(s, sep)
    if not ok:
        return before, after, False
    return before or MISSING_PART, after or MISSING_PART, True


@dataclass(frozen=True)
class ModelName:
    host: str = ""
    namespace: str = ""
    model: str = ""
    tag: str = ""
    scheme: str = ""

    # -- parsing -------------------------------------------------------------------------------
    @classmethod
    def parse_bare(cls, s: str) -> ModelName:
        """``ParseNameBare``: split without applying defaults."""
        host = namespace = tag = scheme = ""
        if s.rfind(":") > s.rfind("/"):
            s, tag, _ = _cut_promised(s, ":")
        s, model, promised = _cut_promised(s, "/")
        if not promised:
            return cls(model=s, tag=tag)
        s, namespace, promised = _cut_promised(s, "/")
        if not promised:
            return cls(namespace=s, model=model, tag=tag)
        scheme_part, sep, host_part = s.partition("://")
        if sep:
            scheme, host = scheme_part, host_part
        else:
            host = scheme_part
        return cls(host=host, namespace=namespace, model=model, tag=tag, scheme=scheme)

    @classmethod
    def parse(cls, s: str) -> ModelName:
        """``ParseName``: parse and fill in Ollama's defaults (not validated: see ``is_valid``)."""
        return cls.parse_bare(s).merge(DEFAULTS)

    @classmethod
    def parse_valid(cls, s: str, message: str = "invalid model name") -> ModelName:
        """Parse with defaults and raise a 400 with ``message`` when the result is not valid."""
        name = cls.parse(s)
        if not name.is_valid:
            raise BadRequest(message)
        return name

    @classmethod
    def from_path_parts(cls, parts: tuple[str, ...] | list[str]) -> ModelName | None:
        """``ParseNameFromFilepath``: a 4-part manifest path, or ``None`` when it is not a valid name."""
        if len(parts) != 4:
            return None
        name = cls(host=parts[0], namespace=parts[1], model=parts[2], tag=parts[3])
        return name if name.is_fully_qualified else None

    def merge(self, other: ModelName) -> ModelName:
        return replace(
            self,
            host=self.host or other.host,
            namespace=self.namespace or other.namespace,
            tag=self.tag or other.tag,
            scheme=self.scheme or other.scheme,
        )

    # -- validity ------------------------------------------------------------------------------
    @property
    def is_fully_qualified(self) -> bool:
        return all(
            is_valid_part(kind, part)
            for kind, part in ((HOST, self.host), (NAMESPACE, self.namespace), (MODEL, self.model), (TAG, self.tag))
        )

    @property
    def is_valid(self) -> bool:
        return self.is_fully_qualified

    # -- display -------------------------------------------------------------------------------
    def __str__(self) -> str:
        out = ""
        if self.host:
            out += self.host + "/"
        if self.namespace:
            out += self.namespace + "/"
        out += self.model
        if self.tag:
            out += ":" + self.tag
        return out

    @property
    def display_shortest(self) -> str:
        if self.host.lower() != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace.lower() != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        else:
            prefix = ""
        return f"{prefix}{self.model}:{self.tag}"

    @property
    def namespace_model(self) -> str:
        return f"{self.namespace}/{self.model}"

    @property
    def parts(self) -> tuple[str, str, str, str]:
        if not self.is_fully_qualified:
            raise ValueError(f"illegal attempt to get the path of invalid name {self!s}")
        return (self.host, self.namespace, self.model, self.tag)

    def filepath(self) -> PurePath:
        return PurePath(*self.parts)

    def key(self) -> tuple[str, str, str, str]:
        """Case-insensitive identity: Ollama matches names against the store ignoring case."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    def equal_fold(self, other: ModelName) -> bool:
        return self.key() == other.key()

    @property
    def base_url(self) -> str:
        return f"{self.scheme or DEFAULT_SCHEME}://{self.host}"


DEFAULTS = ModelName(host=DEFAULT_HOST, namespace=DEFAULT_NAMESPACE, tag=DEFAULT_TAG, scheme=DEFAULT_SCHEME)
