"""The seam between HTTP and the engine: typed calls in, typed chunks out. Imports no torch.

Everything that crosses from a route into the engine is one of these values (mlx-lm's
``GenerationArguments`` idea): a :class:`GenerationCall` (``/api/generate`` and ``/api/chat``, and every
translator over them: ``/v1``), an :class:`EmbedCall`, a :class:`RerankCall`, a :class:`TokenizeCall` or
:class:`DetokenizeCall`, a model to load or unload. What comes back is a stream of :data:`Chunk` values (the
echoed prompt, content, thinking, tool calls, logprobs, and one :class:`Done` with the stats),
:class:`Embeddings`, :class:`Reranked` documents, a :class:`Rendered` prompt, :class:`Tokenized` text, or
:class:`RunnerStatus` for ``/api/ps``. Routes
never see a runner, a loaded model, a worker or a tensor; the engine never sees HTTP.

Errors are raised, as :class:`~ollama_torch.errors.OllamaError` with their status: one raised before the
first chunk is the answer's status, one raised after it ends the stream (each translator writes it in its
own shape: an NDJSON error line, an SSE error frame). Raising rather than yielding an error chunk keeps
"before or after the first line" the route's decision, which is where the wire format lives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from ..errors import OllamaError
from ..names import ModelName
from ..store import StoredModel
from .grammar.format import FormatSpec
from .options import GenerationOptions

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
JsonObject: TypeAlias = "dict[str, JsonValue]"
Think: TypeAlias = "bool | str | None"  # True / False, or a level: "high", "medium", "low", "max"

__all__ = [
    "Chat",
    "Chunk",
    "Completion",
    "Content",
    "DetokenizeCall",
    "Done",
    "EmbedCall",
    "EmbeddingFailed",
    "Embeddings",
    "EngineAPI",
    "FormatSpec",
    "GenerationCall",
    "GenerationOptions",
    "JsonObject",
    "JsonValue",
    "Logprobs",
    "Message",
    "Prompt",
    "RankedDocument",
    "Rendered",
    "RerankCall",
    "Reranked",
    "RunnerStatus",
    "Stats",
    "Think",
    "Thinking",
    "TokenLogprob",
    "TokenizeCall",
    "Tokenized",
    "TokenizerInfo",
    "ToolCall",
    "ToolCalls",
]


# -- what a generation is asked ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolCall:
    """One call of a tool: the arguments are always an object."""

    name: str
    arguments: JsonObject
    id: str = ""
    index: int = 0  # its place among the calls of one response (Ollama's ``function.index``)


@dataclass(frozen=True)
class Message:
    """One chat message, as Ollama's ``api.Message`` has it."""

    role: str
    content: str = ""
    images: tuple[bytes, ...] = ()
    thinking: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_name: str = ""
    tool_call_id: str = ""


@dataclass(frozen=True)
class Completion:
    """``/api/generate``'s input: a prompt rendered through the model's template (unless ``raw``).

    ``tokens`` (``/v1/completions``' token-id prompts) is the prompt as token ids, run exactly as given: no
    template, no BOS added, ``prompt`` unused. Scoring needs the caller's own tokens, not a re-tokenization."""

    prompt: str
    suffix: str = ""
    system: str = ""
    template: str = ""  # a Go template overriding the model's
    raw: bool = False
    context: tuple[int, ...] = ()  # token ids of an earlier exchange
    images: tuple[bytes, ...] = ()
    tokens: tuple[int, ...] = ()


@dataclass(frozen=True)
class Chat:
    """``/api/chat``'s input: the conversation and the tools the model may call."""

    messages: tuple[Message, ...]
    tools: tuple[JsonObject, ...] = ()


@dataclass(frozen=True)
class GenerationCall:
    """One generation, validated by the route that made it."""

    model: StoredModel
    input: Completion | Chat
    options: GenerationOptions
    format: FormatSpec | None = None  # structured output (``format``, ``response_format``)
    think: Think = None
    truncate: bool = True  # a prompt longer than num_ctx is cut (False: a 400)
    logprobs: bool = False
    top_logprobs: int = 0  # alternatives per token, 0..20, with ``logprobs``
    keep_alive: float | None = None  # seconds; None = the server's default
    require_tool_call: bool = False  # the output starts with a call to one of the tools (a tool_choice that demands one)
    echo: bool = False  # send the prompt back first, as a :class:`Prompt` chunk
    prompt_logprobs: bool = False  # with ``echo``: score every prompt token (``top_logprobs`` alternatives)

    def __post_init__(self) -> None:
        if self.prompt_logprobs and not self.echo:
            raise ValueError("prompt_logprobs come in the echoed prompt: set echo too")


@dataclass(frozen=True)
class TokenizeCall:
    model: StoredModel
    text: str
    add_special_tokens: bool = True  # BOS (and whatever else the tokenizer adds), as a prompt gets them
    pieces: bool = False  # also each token's text


@dataclass(frozen=True)
class DetokenizeCall:
    model: StoredModel
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class EmbedCall:
    model: StoredModel
    inputs: tuple[str, ...]
    num_ctx: int | None = None  # tokens per input, special ones included, as Ollama's handler reads it
    truncate: bool = True  # an input longer than that is cut (False: a 400)
    keep_alive: float | None = None


@dataclass(frozen=True)
class RerankCall:
    """Score each document's relevance to the query with a cross-encoder (a model with ``rerank``)."""

    model: StoredModel
    query: str
    documents: tuple[str, ...]  # at least one
    top_n: int | None = None  # the best this many (>= 1; more than there are documents: all); None = all
    keep_alive: float | None = None


# -- what comes back -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenLogprob:
    """A token's log-probability under the model (before penalties, temperature, truncation or grammar),
    named by its text and its exact bytes (a byte-level token may hold part of a character)."""

    token: str
    logprob: float
    bytes: tuple[int, ...] = ()
    top: tuple[TokenLogprob, ...] = ()  # the most likely alternatives, when asked for

    def as_json(self, alternatives: bool = True) -> JsonObject:
        """Ollama's ``api.Logprob`` (``bytes`` omitted when empty, ``top_logprobs`` when not asked for)."""
        out: JsonObject = {"token": self.token, "logprob": self.logprob}
        if self.bytes:
            out["bytes"] = list(self.bytes)
        if alternatives and self.top:
            out["top_logprobs"] = [t.as_json(False) for t in self.top]
        return out


@dataclass(frozen=True)
class Prompt:
    """The prompt as the model read it: the first chunk of a call with ``echo``.

    ``text`` is the prompt's tokens as text. With ``prompt_logprobs``, ``first`` is the first token's text
    (nothing precedes it, so it has no logprob: OpenAI's ``null``) and ``logprobs`` scores each later token
    given all the tokens before it, from the same forward pass and in the same terms as generated tokens."""

    text: str
    first: str = ""
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Content:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()  # of the tokens behind this text


@dataclass(frozen=True)
class Thinking:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ToolCalls:
    calls: tuple[ToolCall, ...]
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Logprobs:
    """Logprobs of tokens whose text is held back (a possible stop string, a partial tag)."""

    entries: tuple[TokenLogprob, ...]


@dataclass(frozen=True)
class Stats:
    prompt_tokens: int  # the whole prompt
    cached_tokens: int  # of those, served from the prefix cache
    prompt_eval_count: int  # prompt tokens evaluated (Ollama's count; a context shift evaluates again)
    prompt_eval_duration: float  # seconds
    eval_count: int  # generated tokens
    eval_duration: float
    load_duration: float


@dataclass(frozen=True)
class Done:
    reason: str  # "stop" | "length"
    stats: Stats
    context: tuple[int, ...] = ()  # prompt + generated token ids (Ollama's ``context``)
    stop_sequence: str = ""  # the stop string that ended it (``reason`` "stop"), "" for an end token or a grammar


Chunk: TypeAlias = "Prompt | Content | Thinking | ToolCalls | Logprobs | Done"


@dataclass(frozen=True)
class Rendered:
    """The prompt a generation would run (``_debug_render_only``, Anthropic's ``count_tokens``)."""

    text: str
    image_count: int
    token_count: int = 0  # its token ids (images as the model's processor expands them), fitted to num_ctx


@dataclass(frozen=True)
class Tokenized:
    """Text as the model's tokenizer splits it (``/tokenize``)."""

    tokens: tuple[int, ...]
    context_length: int  # the model's trained context (vLLM's ``max_model_len``)
    pieces: tuple[str, ...] = ()  # each token's text, when asked for


@dataclass(frozen=True)
class TokenizerInfo:
    """What a client needs to tokenize as the server does (``/tokenizer_info``): the tokenizer's class, its
    special tokens, whether it adds BOS, and the model's Jinja chat template when it has one."""

    tokenizer_class: str
    bos_token: str | None
    eos_token: str | None
    pad_token: str | None
    unk_token: str | None
    add_bos_token: bool
    context_length: int
    chat_template: str | None = None


@dataclass(frozen=True)
class Embeddings:
    vectors: tuple[tuple[float, ...], ...]  # one per input, as the model pooled it (not normalized)
    prompt_eval_count: int
    load_duration: float


@dataclass(frozen=True)
class RankedDocument:
    index: int  # its place in the call's documents
    relevance_score: float  # the cross-encoder's score, after its activation (Sigmoid unless the model says)


@dataclass(frozen=True)
class Reranked:
    results: tuple[RankedDocument, ...]  # best first (equal scores keep the documents' order), at most top_n
    prompt_eval_count: int  # tokens scored: every (query, document) pair, special tokens included, after truncation
    load_duration: float


@dataclass(frozen=True)
class RunnerStatus:
    """One loaded model, for ``/api/ps`` and ``/api/x/engine``."""

    model: StoredModel  # the model that last used it (several may share one runner's weights)
    size: int  # bytes: weights and KV cache
    size_vram: int  # of those, on a GPU
    expires_at: float  # wall clock; inf = never
    context_length: int
    running: int = 0  # requests in the batch
    waiting: int = 0  # requests queued behind it
    batch_size: int = 0
    kv_cache_bytes: int = 0


class EmbeddingFailed(OllamaError):
    """The model failed while embedding (not while being scheduled): ``cause`` is the error with a status
    it raised, None for one without (a bug, a device error). Ollama's two embed handlers answer these
    differently, so the route decides."""

    def __init__(self, message: str, cause: OllamaError | None = None) -> None:
        super().__init__(message, cause.status if cause is not None else 500)
        self.cause = cause


# -- the engine, as routes see it ---------------------------------------------------------------------------
class EngineAPI(Protocol):
    """What the HTTP layer calls. ``ollama_torch.engine.front.Engine`` implements it; unit tests may pass a
    scripted stand-in."""

    def generate(self, call: GenerationCall) -> AsyncIterator[Chunk]:
        """The chunks of one generation, ending with :class:`Done`."""
        ...

    async def render(self, call: GenerationCall) -> Rendered: ...

    async def embed(self, call: EmbedCall) -> Embeddings: ...

    async def rerank(self, call: RerankCall) -> Reranked:
        """The call's documents ranked by relevance; a 400 for a model without ``rerank``."""
        ...

    async def tokenize(self, call: TokenizeCall) -> Tokenized:
        """The text as the model's tokenizer splits it (the model is loaded: its runner owns the tokenizer the
        generations use, so the ids are the ones a completion would run)."""
        ...

    async def detokenize(self, call: DetokenizeCall) -> str:
        """The text of the tokens, special tokens written out; a 400 for an id outside the vocabulary."""
        ...

    async def tokenizer_info(self, model: StoredModel) -> TokenizerInfo: ...

    async def load(self, model: StoredModel, keep_alive: float | None) -> None:
        """Load the model now (an empty prompt), or keep it loaded for ``keep_alive``."""
        ...

    async def unload(self, model: StoredModel) -> None:
        """Unload now, or as soon as its requests finish (``keep_alive: 0``)."""
        ...

    async def forget(self, name: ModelName) -> None:
        """``name`` was deleted: drop runners whose weights are gone from the store."""
        ...

    def status(self) -> list[RunnerStatus]: ...

    async def close(self) -> None: ...

