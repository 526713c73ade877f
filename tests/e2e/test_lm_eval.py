"""lm-evaluation-harness itself against the real server, as a user runs it, compared with its own ``hf`` backend
on the same weights (the store's Safetensors conversion of the SmolLM2 GGUF) in this process.

- ``ot_multiple_choice`` (tests/data/lm_eval: 40 questions x 4 choices, loglikelihood) through
  ``local-completions``: lm-eval's default ``tokenizer_backend=auto`` finds the server's ``/tokenizer_info``
  and ``/tokenize`` (without naming a model: the store holds only SmolLM2, as a user's eval server would),
  sends token-id prompts in batches of 4 with 2 requests in flight, ``echo``, ``logprobs: 1``,
  ``max_tokens: 1``, and reads the prompt's logprobs. Same accuracy as ``hf``, and every choice's
  loglikelihood within 1e-2 (and the same greedy flag). Before: ``echo`` was ignored and a list prompt a 400.
- ``ot_short_answer`` (10 questions, ``generate_until``) through ``local-chat-completions`` with
  ``apply_chat_template``: the same answers as ``hf``'s greedy generation.

- A LoRA fine-tune (trained here on SmolLM2 with PEFT) created ``FROM`` the base with the adapter, through
  ``local-completions``, against ``hf`` with ``peft=`` the adapter: the same loglikelihoods and accuracy on the
  first 20 questions (``limit``), and different from the base's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ollama
import pytest

from tests.e2e.conftest import derived_dir
from tests.server_process import ServerProcess, start_server

pytestmark = pytest.mark.slow

TASKS = Path(__file__).resolve().parents[1] / "data" / "lm_eval"
MODEL = "smollm2:135m"


@pytest.fixture(scope="module")
def eval_server(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[ServerProcess]:
    """A server of its own whose store holds only SmolLM2."""
    root = tmp_path_factory.mktemp("lm-eval")
    server = start_server(root / "models", root / "server.log")
    try:
        client = ollama.Client(host=server.url, timeout=600)
        client.create(model=MODEL, files={smollm2_gguf.name: client.create_blob(smollm2_gguf)})
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def hf_base_choices(eval_server: ServerProcess) -> dict[str, Any]:
    """``ot_multiple_choice`` scored by ``hf`` on the base weights: the reference of the first test, and the
    scores the adapter has to move in the last."""
    return evaluate("hf", hf_args(eval_server), "ot_multiple_choice", batch_size=8)


def evaluate(model: str, model_args: dict[str, Any], task: str, **kwargs: Any) -> dict[str, Any]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    out = simple_evaluate(model=model, model_args=model_args, tasks=[task], task_manager=TaskManager(include_path=str(TASKS)),
                          log_samples=True, bootstrap_iters=0, **kwargs)
    assert out is not None
    return dict(out)


def hf_args(server: ServerProcess) -> dict[str, Any]:
    return {"pretrained": str(derived_dir(server)), "dtype": "float32", "device": "cpu"}


def by_doc(results: dict[str, Any], task: str) -> dict[int, Any]:
    return {s["doc_id"]: s for s in results["samples"][task]}


def test_loglikelihood_through_the_server_matches_hf(eval_server: ServerProcess, hf_base_choices: dict[str, Any]) -> None:
    task = "ot_multiple_choice"
    ours = evaluate("local-completions", {"model": MODEL, "base_url": f"{eval_server.url}/v1/completions", "num_concurrent": 2},
                    task, batch_size=4)
    theirs = hf_base_choices
    ours_docs, their_docs = by_doc(ours, task), by_doc(theirs, task)
    assert len(ours_docs) == len(their_docs) == 40
    worst = 0.0
    for doc_id, sample in their_docs.items():
        mine = ours_docs[doc_id]["resps"]
        for (ll_theirs, greedy_theirs), (ll_mine, greedy_mine) in zip((r[0] for r in sample["resps"]), (r[0] for r in mine), strict=True):
            assert ll_mine != 0.0 and abs(ll_mine - ll_theirs) < 1e-2, (doc_id, ll_mine, ll_theirs)
            assert greedy_mine == greedy_theirs, doc_id
            worst = max(worst, abs(ll_mine - ll_theirs))
    for metric in ("acc,none", "acc_norm,none"):
        assert ours["results"][task][metric] == theirs["results"][task][metric], metric
    print(f"\n{task}: acc {ours['results'][task]['acc,none']:.3f} (both); largest loglikelihood difference {worst:.2e}")


def test_remote_tokenizer_is_the_servers(eval_server: ServerProcess) -> None:
    """What ``tokenizer_backend=auto`` decides for ``local-completions`` (the model's own tokenizer, offline)."""
    from lm_eval.models.openai_completions import LocalCompletionsAPI
    from lm_eval.utils import RemoteTokenizer
    from transformers import AutoTokenizer

    base_url = f"{eval_server.url}/v1/completions"
    assert LocalCompletionsAPI(model=MODEL, base_url=base_url).tokenizer_backend == "remote"
    remote = RemoteTokenizer(base_url)
    local = AutoTokenizer.from_pretrained(derived_dir(eval_server))
    text = "Question: What do bees make?\nAnswer: Honey"
    assert remote.encode(text) == local.encode(text, add_special_tokens=False)
    assert remote.decode(local.encode(text)) == text
    assert (remote.eos_token, remote.eos_token_id) == (local.eos_token, local.eos_token_id)


def test_generate_until_through_chat_completions_matches_hf(eval_server: ServerProcess) -> None:
    task = "ot_short_answer"
    ours = evaluate("local-chat-completions", {"model": MODEL, "base_url": f"{eval_server.url}/v1/chat/completions"}, task,
                    apply_chat_template=True)
    theirs = evaluate("hf", hf_args(eval_server), task, apply_chat_template=True, batch_size=1)
    ours_docs, their_docs = by_doc(ours, task), by_doc(theirs, task)
    assert len(ours_docs) == 10
    assert {i: s["resps"] for i, s in ours_docs.items()} == {i: s["resps"] for i, s in their_docs.items()}
    assert ours["results"][task]["exact_match,first_word"] == theirs["results"][task]["exact_match,first_word"]


ADAPTER_DOCS = 20  # of the 40: the adapter's 80 loglikelihoods, through the server and through PEFT


def evaluate_base_and_adapter(server: ServerProcess, model: str, base_dir: Path, adapter_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``model`` (created ``FROM`` the base with ``ADAPTER adapter_dir``) scored through the server, and the
    base with ``peft=adapter_dir`` scored by ``hf``, on the first ``ADAPTER_DOCS`` questions. The store holds
    the base too, so the remote tokenizer would have to guess: lm-eval reads the base's own tokenizer files
    instead (the adapter keeps them)."""
    task = "ot_multiple_choice"
    ours = evaluate("local-completions", {"model": model, "base_url": f"{server.url}/v1/completions", "num_concurrent": 2,
                                          "tokenizer_backend": "huggingface", "tokenizer": str(base_dir)},
                    task, batch_size=4, limit=ADAPTER_DOCS)
    theirs = evaluate("hf", {"pretrained": str(base_dir), "peft": str(adapter_dir), "dtype": "float32", "device": "cpu"},
                      task, batch_size=8, limit=ADAPTER_DOCS)
    return ours, theirs


def test_base_and_adapter_match_hf_with_peft(eval_server: ServerProcess, hf_base_choices: dict[str, Any], tmp_path: Path) -> None:
    """A fine-tune evaluated as its users do (issue 14): a LoRA trained here on SmolLM2, created ``FROM`` the
    base with the adapter, scored by lm-eval through ``local-completions`` and by ``hf`` with ``peft=``: the same
    loglikelihoods (within 1e-2), greedy flags and accuracy, and different from the base's, so the adapter counts."""
    from tests.lora_support import train_lora

    client = ollama.Client(host=eval_server.url, timeout=600)
    base = derived_dir(eval_server)
    adapter = train_lora(base, tmp_path / "smol-lora", seed=4, steps=3)
    files = {f"{adapter.name}/{p.name}": client.create_blob(p) for p in sorted(adapter.iterdir()) if p.name.startswith("adapter_")}
    client.create(model="smollm2-lora", from_=MODEL, adapters=files)
    task = "ot_multiple_choice"
    try:
        ours, theirs = evaluate_base_and_adapter(eval_server, "smollm2-lora:latest", base, adapter)
    finally:
        client.delete("smollm2-lora")
    ours_docs, their_docs, base_docs = by_doc(ours, task), by_doc(theirs, task), by_doc(hf_base_choices, task)
    assert len(ours_docs) == len(their_docs) == ADAPTER_DOCS
    worst, moved = 0.0, 0.0
    for doc_id, sample in their_docs.items():
        pairs = zip((r[0] for r in sample["resps"]), (r[0] for r in ours_docs[doc_id]["resps"]),
                    (r[0] for r in base_docs[doc_id]["resps"]), strict=True)
        for (ll_theirs, greedy_theirs), (ll_mine, greedy_mine), (ll_base, _) in pairs:
            assert abs(ll_mine - ll_theirs) < 1e-2, (doc_id, ll_mine, ll_theirs)
            assert greedy_mine == greedy_theirs, doc_id
            worst = max(worst, abs(ll_mine - ll_theirs))
            moved = max(moved, abs(ll_theirs - ll_base))
    assert moved > 0.1, "the adapter did not change the scores: the check would not see it ignored"
    for metric in ("acc,none", "acc_norm,none"):
        assert ours["results"][task][metric] == theirs["results"][task][metric], metric
    print(f"\nbase+adapter {task}: acc {ours['results'][task]['acc,none']:.3f} (both; base "
          f"{hf_base_choices['results'][task]['acc,none']:.3f} on all 40); largest difference {worst:.2e}, adapter moved scores by up to {moved:.2f}")
