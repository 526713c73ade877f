"""What dynamo hands inductor: the ops of a traced graph, for tests that check which kernel a layer calls."""

from __future__ import annotations

from typing import Any

import torch


def traced_ops(fn: Any, *args: torch.Tensor) -> str:
    """The ops of the graph dynamo traces ``fn`` into (no inductor: what it would be handed), space-separated."""
    seen: list[str] = []

    def record(gm: torch.fx.GraphModule, example_inputs: Any) -> Any:
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    torch._dynamo.reset()
    torch.compile(fn, backend=record, fullgraph=True)(*args)
    return " ".join(seen)
