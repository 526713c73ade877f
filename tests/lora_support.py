"""Real PEFT LoRA adapters, trained here in seconds (no hub), and PEFT itself as the reference.

``train_lora`` wraps a base model directory with PEFT's ``get_peft_model``, takes a few optimizer steps on
a short text (random-initialized ``lora_B`` so the update is far from zero) and saves the adapter as PEFT
does (``adapter_config.json`` + ``adapter_model.safetensors``). ``peft_greedy`` generates with
``PeftModel`` on the same base, one or several adapters active, as the reference our server must equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

TEXT = (
    "The lighthouse keeper climbed the stairs every evening and lit the lamp for the ships at sea. "
    "Question: What color is grass? Answer: Grass is green. Hello! How are you today?"
)


def train_lora(
    base_dir: Path, out_dir: Path, *, targets: Sequence[str] = ("q_proj", "v_proj"), seed: int = 0, steps: int = 3,
    rank: int = 4, alpha: int = 8, **config: Any,
) -> Path:
    """A LoRA adapter of ``base_dir`` trained for ``steps`` steps, saved in ``out_dir``; returns it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(base_dir)
    lora = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=False, **config)
    peft_model = get_peft_model(model, lora)
    ids = tok(TEXT, return_tensors="pt")["input_ids"][:, :64]
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    for _ in range(steps):
        loss = peft_model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.save_pretrained(str(out_dir))
    return Path(out_dir)


def peft_greedy(base_dir: Path, adapters: Sequence[Path], prompt_ids: list[int], n: int) -> list[int]:
    """Greedy new token ids from PEFT's ``PeftModel`` on ``base_dir`` with ``adapters`` all active (none: the
    base), stopping at EOS."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: Any = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    if adapters:
        names = [f"a{i}" for i in range(len(adapters))]
        model = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name=names[0])
        for name, path in zip(names[1:], adapters[1:], strict=True):
            model.load_adapter(str(path), adapter_name=name)
        model.base_model.set_adapter(names)
    eos = AutoTokenizer.from_pretrained(base_dir).eos_token_id
    with torch.inference_mode():
        out = model.generate(input_ids=torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False)
    new = out[0][len(prompt_ids):].tolist()
    return new[: new.index(eos)] if eos in new else new
