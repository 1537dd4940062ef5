"""Tiny random models and prompts for tests and benchmarks: mechanics, never behaviour.

`build_tiny` saves a tiny random GPT-2, Llama or GPT-NeoX (2-3 layers, 4 heads, ``d_model`` 32)
with a small byte-level BPE tokenizer trained here, loadable with `ascale.load_model(folder)`;
`build_planted` a tiny GPT-2 whose head L1H2 alone does an IOI-like task (a planted circuit
that every attribution method should rank first); `ioi_rows` and `ioi_like_rows` prompts for
them. Nothing here touches the network. Claims about behaviour run on the embedded SmolLM2.

Example:
    >>> folder = build_tiny("gpt2", tmp_path / "tiny")  # doctest: +SKIP
    >>> model = ascale.load_model(folder)  # doctest: +SKIP
"""

import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "NAMES",
    "PLANTED_HEAD",
    "PLANTED_LAYER",
    "TEMPLATE",
    "build_planted",
    "build_tiny",
    "ioi_like_rows",
    "ioi_rows",
    "mlp_scalars",
    "train_tokenizer",
]

WORDS = (
    "When Mary and John went to the store , gave a drink to Rome is the capital of France . "
    "Italy Paris Berlin Germany Spain Madrid in city located Alice Bob Carol Dave Eve then "
    "afterwards had a long argument and"
).split()


def train_tokenizer(folder: Path) -> None:
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


def _config(kind: str) -> Any:
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    common: dict[str, Any] = {"vocab_size": 400, "bos_token_id": 0, "eos_token_id": 0}
    if kind == "gpt2":
        return GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=64, **common)
    if kind in ("llama", "llama_gqa"):  # llama_gqa: 2 key/value heads serve the 4 query heads
        return LlamaConfig(
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2 if kind == "llama_gqa" else 4,
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
    """Save a tiny random `kind` model (``gpt2``, ``llama``, ``llama_gqa``: grouped-query, with
    random norm weights so that folding them is exercised, ``neox``) and its tokenizer to
    `folder`."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(kind))
    if kind == "llama_gqa":
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.copy_(1 + 0.3 * torch.randn_like(p))
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(folder)
    train_tokenizer(folder)
    return folder


NAMES = (" Mary", " John", " Alice", " Bob", " Carol", " Dave", " Eve")
TEMPLATE = "When{A} and{B} went to the store,{B} gave a drink to"
PLANTED_LAYER, PLANTED_HEAD = 1, 2


def ioi_rows(pairs: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    """IOI rows for (indirect object, subject) name pairs: ``("Mary", "John")`` gives
    "When Mary and John went to the store, John gave a drink to", " Mary" against " John"."""
    return [
        {"prompt": TEMPLATE.format(A=f" {a}", B=f" {b}"), "correct": f" {a}", "wrong": f" {b}"}
        for a, b in pairs
    ]


def ioi_like_rows(n: int, seed: int = 0) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Clean IOI-like rows and their ABC corruption (three fresh names)."""
    rng = random.Random(seed)
    clean, corrupt = [], []
    for _ in range(n):
        a, b, x, y, z = rng.sample(NAMES, 5)
        clean.append({"prompt": TEMPLATE.format(A=a, B=b), "correct": a, "wrong": b})
        abc = TEMPLATE.replace("{B} gave", "{C} gave").format(A=x, B=y, C=z)
        corrupt.append({"prompt": abc, "correct": a, "wrong": b})
    return clean, corrupt


def mlp_scalars(model: Any, n_pos: int, values: Iterable[float]) -> Any:
    """`ActivationScalars` on layer 0's ``mlp_out`` at positions ``0 .. len(values) - 1`` of
    prompts of `n_pos` tokens, set to `values` (rankings and refits with a known order)."""
    import ascale

    values = list(values)
    iv = ascale.ActivationScalars(
        model, sites="mlp_out", layers=[0], positions=list(range(len(values))), n_pos=n_pos
    )
    with torch.no_grad():
        iv.params["mlp_out"][0] = torch.tensor(values)
    return iv


def build_planted(src: Path, out: Path) -> Path:
    """Tiny GPT-2 whose head L1H2 alone copies the first name (position 2) to the answer.

    Each name gets its own embedding direction (dims 0-6); position 2 is marked on the last
    dimension, and the head's constant query matches only that mark, so at the last position it
    attends to the first name. Its values and output map the name directions onto themselves,
    and the tied unembedding reads them back: the first name gets a large logit. Every other
    head and MLP keeps its small random weights.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf: Any = AutoModelForCausalLM.from_pretrained(src)
    tok = AutoTokenizer.from_pretrained(src)
    d, d_head = hf.config.n_embd, hf.config.n_embd // hf.config.n_head
    mark, t = d - 1, hf.transformer
    with torch.no_grad():
        for i, name in enumerate(NAMES):
            (token,) = tok(name)["input_ids"]
            t.wte.weight[token, :d_head] = 0
            t.wte.weight[token, i] = 1.0
        t.wte.weight[:, mark] = 0
        t.wpe.weight[:, mark] = -1.0
        t.wpe.weight[2, mark] = 3.0
        attn = t.h[PLANTED_LAYER].attn
        w, b = attn.c_attn.weight, attn.c_attn.bias  # Conv1D: x @ w + b, q|k|v
        q, k, v = (
            slice(o + PLANTED_HEAD * d_head, o + (PLANTED_HEAD + 1) * d_head) for o in (0, d, 2 * d)
        )
        for cols in (q, k, v):
            w[:, cols], b[cols] = 0, 0
        b[q.start] = 10.0
        w[mark, k.start] = 10.0
        rows = slice(PLANTED_HEAD * d_head, (PLANTED_HEAD + 1) * d_head)
        attn.c_proj.weight[rows] = 0
        for j in range(d_head):
            w[j, v.start + j] = 1.0
            attn.c_proj.weight[rows.start + j, j] = 5.0
    hf.save_pretrained(out)
    tok.save_pretrained(out)
    return out
