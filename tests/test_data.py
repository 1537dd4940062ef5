import json
import warnings

import pytest
import torch

from ascale._rows import has_corrupted, read_jsonl
from ascale.data import ContrastSet, corrupted_from_rows, load_jsonl
from ascale.errors import AnswerTokenError, AscaleError, AscaleWarning, PromptLengthError
from ascale.testing import ioi_rows

ROWS = [
    *ioi_rows([("Mary", "John"), ("Alice", "Bob")]),
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


# ---- guarded inputs (issue 10) ----


def _words(n: int) -> str:
    return " ".join(["Mary"] * n)  # one token a word in the tiny tokenizer, plus BOS


def test_a_prompt_longer_than_the_context_is_refused_with_its_length(tiny_gpt2):
    n_ctx = tiny_gpt2.cfg.n_ctx
    at_limit = {"prompt": _words(n_ctx - 1), "correct": " John", "wrong": " Bob"}
    assert int(ContrastSet.from_rows([at_limit], tiny_gpt2).lengths[0]) == n_ctx  # accepted
    too_long = {**at_limit, "prompt": _words(n_ctx + 1)}
    with pytest.raises(
        PromptLengthError, match=rf"row 1 .* is {n_ctx + 2} tokens, .* window of {n_ctx} tokens"
    ):
        ContrastSet.from_rows([at_limit, too_long], tiny_gpt2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt": ""}, "row 1: field 'prompt' is empty"),
        ({"correct": ""}, "row 1: field 'correct' is empty"),
        ({"correct": 5}, "row 1: field 'correct' is int 5, not a string"),
        ({"wrong": 1.5}, "row 1: field 'wrong' is float 1.5, not a string"),
        ({"prompt": None}, "row 1: field 'prompt' is null None, not a string"),
        ({"prompt": ["a"]}, r"row 1: field 'prompt' is list \['a'\], not a string"),
    ],
)
def test_empty_and_non_string_fields_are_refused_naming_row_and_field(tiny_gpt2, change, message):
    with pytest.raises(AscaleError, match=message):
        ContrastSet.from_rows([ROWS[0], {**ROWS[1], **change}], tiny_gpt2)


def test_a_missing_answer_space_and_a_trailing_prompt_space_warn_naming_the_rows(tiny_gpt2):
    rows = [
        ROWS[0],
        {**ROWS[2], "correct": "Italy"},
        {**ROWS[1], "prompt": ROWS[1]["prompt"] + " "},
    ]
    with pytest.warns(AscaleWarning) as caught:
        ContrastSet.from_rows(rows, tiny_gpt2)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert messages[0].startswith("row(s) 1 (1 of 3): an answer without a leading space")
    assert "did you mean ' Italy'?" in messages[0]
    assert messages[1].startswith("row(s) 2 (1 of 3): the prompt ends in a space")


def test_well_formed_rows_do_not_warn(tiny_gpt2):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ContrastSet.from_rows(ROWS, tiny_gpt2)


def test_read_jsonl_checks_the_file_without_a_model(tmp_path):
    with pytest.raises(AscaleError, match="does not exist"):
        read_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(AscaleError, match="is a folder"):
        read_jsonl(tmp_path)
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n" + json.dumps(ROWS[0]).encode() + b"\n\xff\n")
    with pytest.raises(AscaleError, match=r"rows\.jsonl:3: not UTF-8 text \(byte 0xff"):
        read_jsonl(path)
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(ROWS[0]).encode() + b"\n")  # a UTF-8 BOM
    assert read_jsonl(path) == [ROWS[0]]
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({**ROWS[1], "wrong": None}) + "\n")
    with pytest.raises(AscaleError, match=r"rows\.jsonl:2 \(row 1\): field 'wrong' is null"):
        read_jsonl(path)


# ---- counterfactual prompts (issue 8, part 5) ----

SWAPPED = [  # each IOI row's counterfactual: the other row's names
    {**ROWS[0], "corrupted": ROWS[1]["prompt"]},
    {**ROWS[1], "corrupted": ROWS[0]["prompt"]},
]


def test_corrupted_prompts_give_a_set_aligned_with_the_clean_one(tiny_gpt2):
    clean = ContrastSet.from_rows(SWAPPED, tiny_gpt2)
    corrupted = corrupted_from_rows(SWAPPED, tiny_gpt2, clean=clean)
    assert corrupted is not None and corrupted.prompts == (ROWS[1]["prompt"], ROWS[0]["prompt"])
    assert corrupted.correct == clean.correct and corrupted.wrong == clean.wrong
    assert torch.equal(corrupted.lengths, clean.lengths)
    assert torch.equal(corrupted.correct_ids, clean.correct_ids)
    again = corrupted_from_rows(SWAPPED, tiny_gpt2)  # builds the clean set itself
    assert again is not None and torch.equal(again.tokens, corrupted.tokens)
    assert corrupted_from_rows(ROWS, tiny_gpt2) is None and not has_corrupted(ROWS)


def test_a_corrupted_prompt_of_another_length_is_refused_naming_the_row(tiny_gpt2):
    rows = [SWAPPED[0], {**SWAPPED[1], "corrupted": SWAPPED[1]["corrupted"] + " Mary Mary"}]
    with pytest.raises(PromptLengthError, match=r"^row 1: the corrupted prompt .* is \d+ tokens"):
        corrupted_from_rows(rows, tiny_gpt2)


def test_corrupted_prompts_are_all_or_none_and_strings(tiny_gpt2, tmp_path):
    half = [SWAPPED[0], ROWS[1]]
    with pytest.raises(AscaleError, match="row 0 carries a 'corrupted' prompt but row 1 does not"):
        corrupted_from_rows(half, tiny_gpt2)
    with pytest.raises(AscaleError, match="row 1 carries a 'corrupted' prompt but row 0 does not"):
        has_corrupted([ROWS[0], SWAPPED[1]])
    path = tmp_path / "half.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in half))
    with pytest.raises(AscaleError, match=r"half\.jsonl: row 0 carries"):
        read_jsonl(path)  # no model needed
    path.write_text(json.dumps({**ROWS[0], "corrupted": ""}) + "\n")
    with pytest.raises(AscaleError, match=r"half\.jsonl:1 \(row 0\): field 'corrupted' is empty"):
        read_jsonl(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in SWAPPED))
    assert read_jsonl(path) == SWAPPED and has_corrupted(read_jsonl(path))
