"""Shared fixtures: tiny random models built from configs, and the embedded real model.

Tiny models test mechanics only (shapes, identities, hooks, I/O); claims about behaviour run on
the embedded SmolLM2 (`smol`). Nothing here touches the network.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ascale.data import ContrastSet
from ascale.loading import load_model
from ascale.testing import build_planted, build_tiny, ioi_like_rows, ioi_rows


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


@pytest.fixture
def one_thread():
    """One torch thread: on the shared 2-core machines, two threads under load run ~5x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smol():
    """The embedded SmolLM2-135M-Instruct (real behaviour)."""
    return load_model()


# ---- a planted circuit: one head does the task ----

# ---- ten IOI prompts of one length on the tiny GPT-2: fit, evaluate, the forward passes ----

PAIRS = [("Mary", "John"), ("Alice", "Bob"), ("Carol", "Dave"), ("Eve", "Bob"), ("John", "Mary")]
TINY_ROWS = ioi_rows(PAIRS * 2)


@pytest.fixture(scope="module")
def tiny_rows(tiny_gpt2):
    data = ContrastSet.from_rows(TINY_ROWS, tiny_gpt2)
    return data.with_length(int(data.lengths[0]))


@pytest.fixture(scope="session")
def tiny_ioi(tiny_gpt2):
    """The tiny GPT-2 (no planted circuit), 12 clean IOI-like prompts and their ABC corruption."""
    clean_rows, corrupt_rows = ioi_like_rows(12)
    clean = ContrastSet.from_rows(clean_rows, tiny_gpt2)
    return tiny_gpt2, clean, ContrastSet.from_rows(corrupt_rows, tiny_gpt2)


@pytest.fixture(scope="session")
def planted(tiny_dirs, tmp_path_factory):
    """The planted tiny GPT-2, 12 clean IOI-like prompts and their ABC corruption."""
    from ascale.data import ContrastSet

    model = load_model(build_planted(tiny_dirs["gpt2"], tmp_path_factory.mktemp("planted")))
    clean_rows, corrupt_rows = ioi_like_rows(12)
    clean = ContrastSet.from_rows(clean_rows, model)
    return model, clean, ContrastSet.from_rows(corrupt_rows, model)
