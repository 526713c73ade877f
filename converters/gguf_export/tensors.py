"""Which GGUF tensors a Hugging Face state dict becomes, with the transform each needs, checked before writing.

Names come from the ``gguf`` package's ``TensorNameMap`` for the family's llama.cpp architecture: a
Transformers tensor it does not map is an ``UnsupportedExport`` naming it, never dropped. Every output gets
the shape llama.cpp will ask for, computed from the config independently of the tensor itself, and a
tensor of another shape stops the export before a byte is written. Each ``Group`` also knows its inverse,
so the Hugging Face weights can be recovered from the file (``inverse.py``) for our own engine.

Shapes here are numpy's (outermost first): a ``[n_vocab, n_embd]`` embedding is ggml's ``{n_embd, n_vocab}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import UnsupportedExport
from .families import Family, Hparams, rope_freqs

Arrays = list[np.ndarray]
# Never exported: buffers Transformers keeps in the state dict, and BERT's pooler (llama.cpp pools itself).
_SKIP = re.compile(r"(rotary_emb\.inv_freq|\.position_ids|^pooler\.|^cls\.)")


@dataclass(frozen=True)
class Output:
    name: str  # GGUF tensor name
    kind: Any  # gguf.MODEL_TENSOR
    shape: tuple[int, ...]

    @property
    def is_bias(self) -> bool:
        return self.name.endswith(".bias")


@dataclass(frozen=True)
class Group:
    """Hugging Face tensors -> GGUF tensors (mostly one to one), and back."""

    hf_names: tuple[str, ...]
    outputs: tuple[Output, ...]
    forward: Callable[[Arrays], Arrays]
    inverse: Callable[[Arrays], Arrays]


def _same(xs: Arrays) -> Arrays:
    return xs


def interleave_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Per head, rows in halves order (x0..x{d/2-1}, y0..) -> interleaved pairs (x0, y0, x1, y1...)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def halve_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of ``interleave_rows``."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def plan_tensors(
    family: Family, config: Any, hp: Hparams, shapes: dict[str, tuple[int, ...]], vocab_rows: int, tied: bool
) -> list[Group]:
    """The groups for a state dict given as ``name -> shape``; raises ``UnsupportedExport`` for a tensor
    without a counterpart or of the wrong shape."""
    import gguf

    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == family.arch)
    names = gguf.TensorNameMap(arch, hp.n_layer)
    expect = _Expected(family, config, hp, vocab_rows)
    groups: list[Group] = []
    freqs = rope_freqs(config, hp)
    if freqs is not None:
        out = Output("rope_freqs.weight", gguf.MODEL_TENSOR.ROPE_FREQS, tuple(freqs.shape))
        groups.append(Group((), (out,), _constant(freqs), lambda _xs: []))
    for hf_name, shape in shapes.items():
        if _SKIP.search(hf_name):
            continue
        if hf_name == "lm_head.weight" and (tied or not family.has_output):
            if not tied:
                raise UnsupportedExport(f"{family.arch} in llama.cpp ties the output to the embedding, this model does not")
            continue
        if hf_name.endswith("experts.gate_up_proj"):
            groups.append(_split_experts(names, hf_name, shape, expect))
            continue
        found = names.get_type_and_name(hf_name, try_suffixes=(".weight", ".bias"))
        if found is None:
            raise UnsupportedExport(f'tensor "{hf_name}" has no counterpart in llama.cpp\'s "{family.arch}" architecture')
        kind, name = found
        if not name.endswith((".weight", ".bias")):  # Transformers' fused expert parameters have no suffix
            name += ".weight"
        out = Output(name, kind, tuple(shape))
        expect.check(out, hf_name)
        forward, inverse = _transforms(family, hp, kind, name)
        groups.append(Group((hf_name,), (out,), forward, inverse))
    _check_unique(groups)
    return groups


def _constant(value: np.ndarray) -> Callable[[Arrays], Arrays]:
    """A tensor computed from the config (RoPE factors): nothing in, ``value`` out."""

    def forward(_xs: Arrays) -> Arrays:
        return [value]

    return forward


def _transforms(family: Family, hp: Hparams, kind: Any, name: str) -> tuple[Callable[[Arrays], Arrays], Callable[[Arrays], Arrays]]:
    import gguf

    t = gguf.MODEL_TENSOR
    if family.interleave_qk and kind in (t.ATTN_Q, t.ATTN_K):
        heads = hp.n_head if kind == t.ATTN_Q else hp.n_head_kv
        if hp.rope_dim != hp.head_dim:
            raise UnsupportedExport("partial rotary embeddings are not supported for this architecture")
        return (lambda xs: [interleave_rows(xs[0], heads)]), (lambda xs: [halve_rows(xs[0], heads)])
    if family.norm_plus_one and name.endswith("norm.weight"):
        return (lambda xs: [xs[0] + 1]), (lambda xs: [xs[0] - 1])
    return _same, _same


def _split_experts(names: Any, hf_name: str, shape: tuple[int, ...], expect: _Expected) -> Group:
    """Transformers 5 keeps each layer's experts' gate and up projections fused ``[E, 2F, H]`` (gate first);
    llama.cpp's ``llama`` arch reads them as two ``[E, F, H]`` tensors."""
    import gguf

    bid = re.search(r"\.(\d+)\.", hf_name)
    if bid is None:
        raise UnsupportedExport(f'tensor "{hf_name}" has no layer number')
    i = int(bid.group(1))
    half = shape[1] // 2
    gate = Output(f"blk.{i}.ffn_gate_exps.weight", gguf.MODEL_TENSOR.FFN_GATE_EXP, (shape[0], half, shape[2]))
    up = Output(f"blk.{i}.ffn_up_exps.weight", gguf.MODEL_TENSOR.FFN_UP_EXP, (shape[0], half, shape[2]))
    for out in (gate, up):
        expect.check(out, hf_name)
    return Group(
        (hf_name,), (gate, up),
        lambda xs: [xs[0][:, :half], xs[0][:, half:]],
        lambda xs: [np.concatenate(xs, axis=1)],
    )


def head_names(groups: list[Group]) -> set[str]:
    """The tensor llama.cpp multiplies the last hidden state by: ``output.weight``, else the tied embedding."""
    names = {out.name for g in groups for out in g.outputs}
    return {"output.weight"} if "output.weight" in names else {"token_embd.weight"} & names


def _check_unique(groups: list[Group]) -> None:
    seen: set[str] = set()
    for g in groups:
        for out in g.outputs:
            if out.name in seen:
                raise UnsupportedExport(f"two tensors map to {out.name}")
            seen.add(out.name)


class _Expected:
    """The shape llama.cpp's loader asks for, per tensor kind, from the config alone."""

    def __init__(self, family: Family, config: Any, hp: Hparams, vocab_rows: int) -> None:
        import gguf

        t = gguf.MODEL_TENSOR
        e, f, d, x = hp.n_embd, hp.n_ff, hp.head_dim, hp.n_expert
        q, kv = hp.n_head * d, hp.n_head_kv * d
        self.shapes: dict[Any, tuple[int, ...]] = {
            t.TOKEN_EMBD: (vocab_rows, e), t.OUTPUT: (vocab_rows, e), t.OUTPUT_NORM: (e,),
            t.ATTN_NORM: (e,), t.ATTN_Q: (q, e), t.ATTN_K: (kv, e), t.ATTN_V: (kv, e), t.ATTN_OUT: (e, q),
            t.ATTN_QKV: (q + 2 * kv, e), t.ATTN_Q_NORM: (d,), t.ATTN_K_NORM: (d,),
            t.ATTN_POST_NORM: (e,), t.FFN_NORM: (e,), t.FFN_PRE_NORM: (e,), t.FFN_POST_NORM: (e,),
            t.FFN_GATE: (f, e), t.FFN_UP: ((2 * f if family.arch == "phi3" else f), e), t.FFN_DOWN: (e, f),
            t.FFN_GATE_INP: (x, e), t.FFN_GATE_EXP: (x, f, e), t.FFN_UP_EXP: (x, f, e), t.FFN_DOWN_EXP: (x, e, f),
            t.POS_EMBD: (hp.n_ctx, e), t.TOKEN_TYPES: (int(getattr(config, "type_vocab_size", 0) or 0), e),
            t.TOKEN_EMBD_NORM: (e,), t.ATTN_OUT_NORM: (e,), t.LAYER_OUT_NORM: (e,),
            t.ROPE_FREQS: (hp.rope_dim // 2,),
        }  # fmt: skip

    def check(self, out: Output, source: str) -> None:
        want = self.shapes.get(out.kind)
        if want is None:
            raise UnsupportedExport(f'tensor "{source}" ({out.name}) is not one the GGUF export knows the shape of')
        if out.is_bias:
            want = want[:1] if len(want) > 1 else want
        if tuple(out.shape) != want:
            raise UnsupportedExport(
                f'tensor "{source}" has shape {list(out.shape)} as {out.name}; llama.cpp expects {list(want)}'
            )


def tensor_qtype(out: Output, target: Any, head: bool = False) -> Any:
    """The ggml type of one tensor for a ``gguf``-written file of ``target`` type: llama.cpp keeps 1-D
    tensors, norms, biases, positions and routers in F32; the output head (``head``: ``output.weight``, or
    the embedding when it is tied to the head) of a 4/5-bit file is Q8_0, as llama.cpp's quantizer keeps the
    head at higher precision (Q6_K, which the ``gguf`` package cannot write); and a row that is not a whole
    number of blocks falls back to F16 (the reference quantizers work on whole blocks)."""
    import gguf

    t = gguf.MODEL_TENSOR
    q = gguf.GGMLQuantizationType
    if (
        len(out.shape) <= 1
        or out.name.endswith("_norm.weight")
        or not out.name.endswith(".weight")
        or out.kind in (t.FFN_GATE_INP, t.POS_EMBD, t.TOKEN_TYPES, t.ROPE_FREQS)
    ):
        return q.F32
    if head and target in (q.Q4_0, q.Q4_1, q.Q5_0, q.Q5_1):
        target = q.Q8_0
    block = gguf.GGML_QUANT_SIZES[target][0]
    if out.shape[-1] % block:
        return q.F16
    return target
