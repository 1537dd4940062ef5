"""The task builders' shared helpers (`ascale/tasks/_common.py`), and the sets they build.

The digests pin the exact prompts, answers and token lengths the builders gave for these seeds
before the corruption loop and the length picking moved into one module: any change to what a
seed draws fails here.
"""

import hashlib
import json

import pytest

from ascale.data import ContrastSet
from ascale.errors import AscaleError
from ascale.tasks import ccc, ccc_corrupt, ioi, ioi_corrupt
from ascale.tasks._common import corrupt, mentions


def _digest(data: ContrastSet) -> str:
    blob = json.dumps([data.prompts, data.correct, data.wrong, data.lengths.tolist()])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _sets(model, n: int, seeds: tuple[int, ...]) -> dict[str, ContrastSet]:
    out = {}
    for seed in seeds:
        out[f"ccc {seed}"] = clean = ccc(model, n=n, seed=seed)
        out[f"ccc_corrupt {seed}"] = ccc_corrupt(clean, model, seed=seed)
        out[f"ioi {seed}"] = clean = ioi(model, n=n, seed=seed)
        out[f"ioi_corrupt {seed}"] = ioi_corrupt(clean, model, seed=seed)
    return out


TINY = {  # tiny GPT-2 of conftest.py: four single-token countries, seven names
    "ccc 0": "12acbce9a3630990",
    "ccc_corrupt 0": "bd28c5e4bb7b61ec",
    "ioi 0": "c8494d2477cd6977",
    "ioi_corrupt 0": "be56cf36c8861310",
    "ccc 1": "3d697724035d79b0",
    "ccc_corrupt 1": "91450220e5ff2f2a",
    "ioi 1": "0d665dd43dc326e2",
    "ioi_corrupt 1": "fdb47d522be05b8a",
}

SMOL = {
    "ccc 0": "d27bdef073eaba41",  # 'Riga is the capital of Norway. Riga is in', ...
    "ccc_corrupt 0": "b62e06210665066a",
    "ioi 0": "3e354c15c8a90458",
    "ioi_corrupt 0": "4c7e4e6a7b77c6a8",
    "ccc all None": "ee0538cc4266247d",
    "ccc_corrupt all None": "5644fc41eabf3006",
    "ioi all None": "281a6200b091c6bb",
    "ioi_corrupt all None": "0fa65ff211b9aed2",
}


def test_builders_draw_what_they_drew_before_on_a_tiny_model(tiny_gpt2):
    sets = _sets(tiny_gpt2, n=8, seeds=(0, 1))
    assert {k: _digest(v) for k, v in sets.items()} == TINY
    assert sets["ioi_corrupt 0"].prompts[0] == (
        "When John and Carol went to the store, Mary gave a drink to"
    )


@pytest.mark.real
def test_builders_draw_what_they_drew_before_on_smollm2(smol):
    sets = _sets(smol, n=200, seeds=(0,))
    sets["ccc all None"] = clean = ccc(smol, n=100, seed=3, template="all", length=None)
    sets["ccc_corrupt all None"] = ccc_corrupt(clean, smol, seed=5)
    sets["ioi all None"] = clean = ioi(smol, n=100, seed=3, templates="all", length=None)
    sets["ioi_corrupt all None"] = ioi_corrupt(clean, smol, seed=5)
    assert {k: _digest(v) for k, v in sets.items()} == SMOL


def test_corrupt_takes_the_first_candidate_of_the_clean_length(tiny_gpt2):
    clean = ContrastSet.from_rows(
        [{"prompt": "Rome is in", "correct": " Italy", "wrong": " France"}] * 2, tiny_gpt2
    )
    tried = []

    def candidates(i, prompt, correct, wrong):
        for new in (prompt + " the city", f"Paris is in{' ' * i}", "Berlin is in"):
            tried.append((i, new))
            yield new

    out = corrupt(clean, tiny_gpt2, candidates, none_fit="nothing")
    assert out.prompts == ("Paris is in", "Berlin is in")  # row 1: "Paris is in " is longer
    assert (out.correct, out.wrong) == (clean.correct, clean.wrong)
    assert tried == [(0, "Rome is in the city"), (0, "Paris is in"), (1, "Rome is in the city"),
                     (1, "Paris is in "), (1, "Berlin is in")]  # fmt: skip


def test_corrupt_names_the_row_none_of_whose_candidates_fits(tiny_gpt2):
    clean = ContrastSet.from_rows(
        [{"prompt": "Rome is in", "correct": " Italy", "wrong": " France"}], tiny_gpt2
    )
    with pytest.raises(AscaleError, match=r"row 0 \('Rome is in'\): no city keeps the prompt at"):
        corrupt(clean, tiny_gpt2, lambda *row: ["Rome is in the city"], none_fit="no city keeps")


def test_corruptions_refuse_rows_that_do_not_name_their_answers(tiny_gpt2):
    row = {"prompt": "Rome is in", "correct": " Italy", "wrong": " France"}
    with pytest.raises(AscaleError, match="does not mention its wrong answer ' France'"):
        ccc_corrupt(ContrastSet.from_rows([row], tiny_gpt2), tiny_gpt2)
    with pytest.raises(AscaleError, match="should name its indirect object 'Italy'"):
        ioi_corrupt(ContrastSet.from_rows([row], tiny_gpt2), tiny_gpt2)


def test_mentions_matches_whole_words():
    assert mentions("Rome is in Italy.", "Italy")
    assert not mentions("Francesca is here", "France")
    assert mentions("New York, then York", "York")


def test_a_builder_asked_for_more_prompts_than_exist_says_how_many(tiny_gpt2):
    from ascale.errors import AscaleWarning

    for build in (ccc, ioi):
        with pytest.warns(
            AscaleWarning, match=r"n=100000 prompts asked, but only \d+ distinct"
        ) as w:
            data = build(tiny_gpt2, n=100000)
        assert f"only {len(data)} distinct" in str(w[0].message) and 0 < len(data) < 100000
