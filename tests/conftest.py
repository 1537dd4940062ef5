"""Shared fixtures: tiny random models built from configs, and the embedded real model.

Tiny models test mechanics only (shapes, identities, hooks, I/O); claims about behaviour run on
the embedded SmolLM2 (`smol`). Nothing here touches the network.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from ascale.models import load_model

WORDS = (
    "When Mary and John went to the store , gave a drink to Rome is the capital of France . "
    "Italy Paris Berlin Germany Spain Madrid in city located Alice Bob Carol Dave Eve then "
    "afterwards had a long argument and"
).split()


def _tokenizer(folder: Path) -> None:
    """A small byte-level BPE tokenizer trained here, saved as a Hugging Face tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [" ".join(rng.choices(WORDS, k=12)) for _ in range(300)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    fast.save_pretrained(folder)


def _config(kind: str):
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    common = {"vocab_size": 400, "bos_token_id": 0, "eos_token_id": 0}
    if kind == "gpt2":
        return GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=64, **common)
    if kind == "llama":
        return LlamaConfig(
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            hidden_size=32,
            intermediate_size=64,
            max_position_embeddings=64,
            tie_word_embeddings=False,
            **common,
        )
    return GPTNeoXConfig(
        num_hidden_layers=3,
        num_attention_heads=4,
        hidden_size=32,
        intermediate_size=64,
        max_position_embeddings=64,
        **common,
    )


def build_tiny(kind: str, folder: Path) -> Path:
    """Save a tiny random `kind` model and its tokenizer to `folder`."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(kind))
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(folder)
    _tokenizer(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {k: build_tiny(k, root / k) for k in ("gpt2", "llama", "neox")}


@pytest.fixture(scope="session", params=["gpt2", "llama"])
def tiny(request: pytest.FixtureRequest, tiny_dirs: dict[str, Path]):
    """A tiny random model (GPT-2 and Llama shapes), loaded through `load_model`."""
    return load_model(tiny_dirs[request.param])


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_dirs: dict[str, Path]):
    return load_model(tiny_dirs["gpt2"])


@pytest.fixture(scope="session")
def smol():
    """The embedded SmolLM2-135M-Instruct (real behaviour)."""
    return load_model()
