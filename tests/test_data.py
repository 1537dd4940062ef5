import json

import pytest
import torch

from ascale.data import ContrastSet, load_jsonl
from ascale.errors import AnswerTokenError, AscaleError, PromptLengthError

ROWS = [
    {
        "prompt": "When Mary and John went to the store, John gave a drink to",
        "correct": " Mary",
        "wrong": " John",
    },
    {
        "prompt": "When Alice and Bob went to the store, Bob gave a drink to",
        "correct": " Alice",
        "wrong": " Bob",
    },
    {
        "prompt": "Rome is the capital of France. Rome is in",
        "correct": " Italy",
        "wrong": " France",
    },
]


def test_rows_are_tokenised_with_right_padding(tiny_gpt2):
    data = ContrastSet.from_rows(ROWS, tiny_gpt2)
    assert len(data) == 3 and data.tokens.shape[0] == 3
    for i, prompt in enumerate(data.prompts):
        alone = tiny_gpt2.to_tokens(prompt)[0]
        n = int(data.lengths[i])
        assert n == len(alone) and torch.equal(data.tokens[i, :n], alone)
        assert data.attention_mask[i].sum() == n
    assert data.correct_ids[0] == tiny_gpt2.to_single_token(" Mary")


def test_multi_token_answer_names_the_row(tiny_gpt2):
    rows = [*ROWS, {"prompt": "Rome is in", "correct": " Italyxyzzy", "wrong": " France"}]
    with pytest.raises(AnswerTokenError, match=r"row 3 .*' Italyxyzzy' is \d+ tokens"):
        ContrastSet.from_rows(rows, tiny_gpt2)


def test_same_answers_and_missing_keys_are_refused(tiny_gpt2):
    with pytest.raises(AnswerTokenError, match="same token"):
        ContrastSet.from_rows([{"prompt": "a", "correct": " Mary", "wrong": " Mary"}], tiny_gpt2)
    with pytest.raises(AscaleError, match="misses key"):
        ContrastSet.from_rows([{"prompt": "a", "correct": " Mary"}], tiny_gpt2)


def test_unequal_lengths_count_each_length(tiny_gpt2):
    data = ContrastSet.from_rows(ROWS, tiny_gpt2)
    assert not data.is_uniform
    with pytest.raises(PromptLengthError, match=r"prompt\(s\) of \d+ tokens"):
        _ = data.n_pos
    n = int(data.lengths[0])
    kept = data.with_length(n)
    assert kept.is_uniform and kept.n_pos == n and kept.tokens.shape[1] == n


def test_split_is_deterministic_and_disjoint(tiny_gpt2):
    data = ContrastSet.from_rows(ROWS * 10, tiny_gpt2)
    train, test = data.split(test_size=0.3, seed=1)
    again_train, again_test = data.split(test_size=0.3, seed=1)
    assert train.prompts == again_train.prompts and test.prompts == again_test.prompts
    assert len(train) + len(test) == 30 and len(test) == 9
    other, _ = data.split(test_size=0.3, seed=2)
    assert other.correct != train.correct or other.prompts != train.prompts
    with pytest.raises(AscaleError):
        data.split(test_size=1.5)


def test_jsonl_round_trip(tiny_gpt2, tmp_path):
    data = ContrastSet.from_rows(ROWS, tiny_gpt2)
    path = data.to_jsonl(tmp_path / "rows.jsonl")
    assert json.loads(path.read_text().splitlines()[2]) == ROWS[2]
    again = load_jsonl(path, tiny_gpt2)
    assert again.rows() == ROWS and torch.equal(again.tokens, data.tokens)


def test_bad_jsonl_names_the_line(tiny_gpt2, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    with pytest.raises(AscaleError, match=r"bad\.jsonl:2"):
        load_jsonl(path, tiny_gpt2)
