"""Country-Capital Conflicts: a false fact in context against the model's own knowledge.

``"Rome is the capital of France. Rome is in"`` -> correct ``" Italy"``, wrong ``" France"``.
The model must answer from memory while the context pushes the copied, false country.
"""

import csv
import random
import re
from collections.abc import Iterator
from functools import cache, partial
from importlib.resources import files

import torch

from ascale import _tl
from ascale._types import HookedModel
from ascale.data import ContrastSet
from ascale.errors import AscaleError
from ascale.tasks._common import SAMPLE, check_count, corrupt, mentions, pick_length, templates_for

__all__ = ["CCC_TEMPLATES", "ccc", "ccc_corrupt"]

#: A false in-context statement, then the question: the context names {false_country}, the
#: model's memory the capital's real country (the correct answer).
CCC_TEMPLATES: tuple[str, ...] = (
    "{capital} is the capital of {false_country}. {capital} is in",
    "{capital} is the capital of {false_country}. {capital} is located in",
    "The capital of {false_country} is {capital}. {capital} is a city in",
    "{capital} is the capital city of {false_country}. The city of {capital} is in",
)

# Short names that read wrongly without "the" ("Rome is in Netherlands"): left out of prompts.
_NEEDS_THE = frozenset({"Bahamas", "Netherlands", "Philippines"})


@cache
def _table() -> tuple[tuple[str, str], ...]:
    """(country, capital) rows of the embedded table."""
    text = files("ascale.tasks").joinpath("countries.csv").read_text(encoding="utf-8")
    return tuple((r["country"], r["capital"]) for r in csv.DictReader(text.splitlines()))


def _single_token_countries(model: HookedModel) -> list[str]:
    return [
        country
        for country, _ in _table()
        if country not in _NEEDS_THE and len(_tl.answer_token_ids(model, " " + country)) == 1
    ]


def _known(model: HookedModel, countries: list[str], capitals: dict[str, str]) -> set[str]:
    """Countries the model names first, among `countries`, after ``"{capital} is in"``."""
    tokens, lengths = _tl.tokenize(model, [f"{capitals[c]} is in" for c in countries])
    mask = (torch.arange(tokens.shape[1])[None, :] < lengths[:, None]).long()
    device = getattr(model.cfg, "device", None)
    if device is not None:
        tokens, mask = tokens.to(device), mask.to(device)
    ids = torch.tensor([_tl.answer_token_ids(model, " " + c)[0] for c in countries])
    with torch.no_grad():
        logits = _tl.run(model, tokens, mask)
    best = logits[torch.arange(len(countries)), lengths - 1][:, ids].argmax(-1).cpu()
    return {c for i, c in enumerate(countries) if int(best[i]) == i}


def _check_template(t: str) -> None:
    if "{capital}" not in t or "{false_country}" not in t:
        raise AscaleError(f"template {t!r} needs {{capital}} and {{false_country}}")


def ccc(
    model: HookedModel,
    *,
    n: int = 200,
    seed: int = 0,
    length: int | str | None = "modal",
    template: str | None = None,
    known_only: bool = False,
) -> ContrastSet:
    """Country-Capital Conflict prompts: a false capital fact in context, then a question.

    Every (capital, true country, false country) triple whose two countries are single tokens
    for the model (with the leading space) is a candidate; capitals that contain a country's
    name (``Mexico City``) are left out. Candidates are sampled with ``random.Random(seed)``.

    Args:
        model: the model whose tokenizer decides single tokens and lengths.
        n: at most this many prompts.
        seed: sampling seed; the same seed gives the same set.
        length: ``"modal"`` keeps the most common token length (among at most 3000 sampled
            candidates), an int keeps only that length, ``None`` keeps every length.
        template: a format string with ``{capital}`` and ``{false_country}``; ``None`` uses
            ``CCC_TEMPLATES[0]``, ``"all"`` mixes every template in `CCC_TEMPLATES`.
        known_only: keep only capitals the model places in their country without a conflict
            (its top country after ``"{capital} is in"``, one batched forward pass). Small
            models miss many capitals; without this, some prompts test no knowledge at all.

    Returns:
        A `ContrastSet` with correct ``" {true_country}"`` and wrong ``" {false_country}"``.

    Raises:
        AscaleError: no prompt fits (e.g. no candidate has the requested length).

    Example:
        >>> data = ccc(model, n=100)  # SmolLM2: 'Riga is the capital of Norway. Riga is in'
        >>> data.prompts[0], data.correct[0], data.wrong[0]
        ('Paris is the capital of Italy. Paris is in', ' France', ' Italy')
    """
    templates = templates_for(n, template, CCC_TEMPLATES, _check_template)
    countries = _single_token_countries(model)
    capitals = dict(_table())
    trues = _known(model, countries, capitals) if known_only else set(countries)
    triples = [
        (capitals[true], true, false)
        for true in countries
        if true in trues
        for false in countries
        if true != false
        and not mentions(capitals[true], true)
        and not mentions(capitals[true], false)
    ]
    candidates = [(t, *triple) for t in templates for triple in triples]
    rng = random.Random(seed)
    rng.shuffle(candidates)
    candidates = candidates[: n if length is None else SAMPLE]
    prompts = [t.format(capital=cap, false_country=false) for t, cap, _, false in candidates]
    anchors = [" " + false for _, _, _, false in candidates]
    keep, target = pick_length(model, prompts, length, anchors)
    keep = keep[:n]
    if not keep:
        raise AscaleError(
            f"no country-capital conflict prompt has {target} tokens for this model "
            f"({len(prompts)} candidate(s) tried); try length='modal' or length=None"
        )
    check_count("ccc", n, len(keep), target)
    rows = [
        {"prompt": prompts[i], "correct": " " + candidates[i][2], "wrong": " " + candidates[i][3]}
        for i in keep
    ]
    return ContrastSet.from_rows(rows, model)


def _other_countries(
    countries: list[str], rng: random.Random, i: int, prompt: str, correct: str, wrong: str
) -> Iterator[str]:
    """Row `i` with its false country replaced by each other country it does not mention."""
    true, false = correct.strip(), wrong.strip()
    pattern = re.compile(rf"(?<!\w){re.escape(false)}(?!\w)")
    if not pattern.search(prompt):
        raise AscaleError(f"row {i} ({prompt!r}) does not mention its wrong answer {wrong!r}")
    options = [c for c in countries if c not in (true, false) and not mentions(prompt, c)]
    rng.shuffle(options)
    return (pattern.sub(other, prompt) for other in options)


def ccc_corrupt(data: ContrastSet, model: HookedModel, *, seed: int = 0) -> ContrastSet:
    """The corrupted inputs for activation patching: another false country in each context.

    Each prompt's false country (the wrong answer) is replaced by a different single-token
    country that is neither the correct nor the wrong answer, keeping the token length. The
    answers stay those of the clean row, so metrics compare like with like.

    Args:
        data: a clean set, as built by `ccc`.
        model: the model the set was tokenised for.
        seed: which replacement countries are drawn.

    Returns:
        A `ContrastSet` aligned row by row with `data`, every prompt as long as its clean one.

    Raises:
        AscaleError: a prompt does not mention its wrong answer, or no replacement keeps its
            token length.

    Example:
        >>> ccc_corrupt(ccc(model), model).prompts[0]  # clean: '... capital of Italy. ...'
        'Paris is the capital of Germany. Paris is in'
    """
    other_countries = partial(_other_countries, _single_token_countries(model), random.Random(seed))
    return corrupt(data, model, other_countries, none_fit="no other country keeps")
