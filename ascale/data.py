"""Contrast sets: prompts with a correct and a wrong single-token answer, tokenised for one model.

A row is ``{"prompt": "Rome is the capital of France. Rome is in", "correct": " Italy",
"wrong": " France"}``. Rows are tokenised once, with right padding (real tokens keep their
positions, so rotary models see the same positions as for an unpadded prompt), and the answer is
read at each prompt's last real token.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from ascale import models
from ascale.errors import AnswerTokenError, AscaleError, PromptLengthError

__all__ = ["ContrastSet", "load_jsonl"]


@dataclass(frozen=True)
class ContrastSet:
    """Prompts with a correct and a wrong answer token, tokenised for one model.

    Build one with `ContrastSet.from_rows` (or `load_jsonl`, or a task builder in `ascale.tasks`);
    the constructor itself takes already-checked tensors.

    Example:
        >>> data = ContrastSet.from_rows(
        ...     [{"prompt": "Rome is in", "correct": " Italy", "wrong": " France"}], model
        ... )  # doctest: +SKIP
        >>> data.n_pos  # doctest: +SKIP
        3
    """

    prompts: tuple[str, ...]
    correct: tuple[str, ...]
    wrong: tuple[str, ...]
    tokens: Int[Tensor, "batch pos"] = field(repr=False)
    lengths: Int[Tensor, " batch"] = field(repr=False)
    correct_ids: Int[Tensor, " batch"] = field(repr=False)
    wrong_ids: Int[Tensor, " batch"] = field(repr=False)
    str_tokens: tuple[str, ...] = field(repr=False, default=())

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, str]], model: Any) -> ContrastSet:
        """Tokenise ``{"prompt", "correct", "wrong"}`` rows for `model`, checking every row.

        Raises:
            AnswerTokenError: an answer is not exactly one token; the message names the row.
            AscaleError: a row misses a key, or there are no rows.
        """
        rows = list(rows)
        if not rows:
            raise AscaleError("a contrast set needs at least one row")
        for i, row in enumerate(rows):
            missing = {"prompt", "correct", "wrong"} - set(row)
            if missing:
                raise AscaleError(f"row {i} misses key(s) {sorted(missing)}: {dict(row)!r}")
        prompts = tuple(r["prompt"] for r in rows)
        correct = tuple(r["correct"] for r in rows)
        wrong = tuple(r["wrong"] for r in rows)
        correct_ids = _answer_ids(model, correct, prompts, "correct")
        wrong_ids = _answer_ids(model, wrong, prompts, "wrong")
        same = (correct_ids == wrong_ids).nonzero().flatten().tolist()
        if same:
            i = same[0]
            raise AnswerTokenError(
                f"row {i} ({prompts[i]!r}): correct and wrong answer are the same token "
                f"{correct[i]!r}"
            )
        tokens, lengths = models.tokenize(model, list(prompts))
        str_tokens = tuple(models.str_tokens(model, tokens[0, : int(lengths[0])]))
        return cls(prompts, correct, wrong, tokens, lengths, correct_ids, wrong_ids, str_tokens)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def is_uniform(self) -> bool:
        """Whether every prompt has the same token length."""
        return bool((self.lengths == self.lengths[0]).all())

    @property
    def n_pos(self) -> int:
        """The common token length of the prompts.

        Raises:
            PromptLengthError: prompts differ in length; the message counts each length.
        """
        if not self.is_uniform:
            counts = Counter(self.lengths.tolist())
            table = ", ".join(f"{n} prompt(s) of {k} tokens" for k, n in sorted(counts.items()))
            raise PromptLengthError(
                f"prompts differ in token length ({table}); position-tied interventions need "
                "one length: filter with `data.with_length(n)` or use DynamicScalars"
            )
        return int(self.lengths[0])

    @property
    def attention_mask(self) -> Int[Tensor, "batch pos"]:
        """1 on real tokens, 0 on right padding."""
        positions = torch.arange(self.tokens.shape[1])
        return (positions[None, :] < self.lengths[:, None]).long()

    def subset(self, index: Sequence[int] | Tensor) -> ContrastSet:
        """The rows at `index`, in that order (padding trimmed to the longest kept prompt)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        keep = idx.tolist()
        lengths = self.lengths[idx]
        width = int(lengths.max()) if len(keep) else 0
        first = keep[0] if keep else 0
        str_tokens = self.str_tokens if first == 0 else ()
        return ContrastSet(
            tuple(self.prompts[i] for i in keep),
            tuple(self.correct[i] for i in keep),
            tuple(self.wrong[i] for i in keep),
            self.tokens[idx, :width],
            lengths,
            self.correct_ids[idx],
            self.wrong_ids[idx],
            str_tokens,
        )

    def with_length(self, n_pos: int) -> ContrastSet:
        """Only the prompts of exactly `n_pos` tokens."""
        keep = (self.lengths == n_pos).nonzero().flatten()
        if len(keep) == 0:
            raise PromptLengthError(
                f"no prompt has {n_pos} tokens; lengths present: "
                f"{sorted(set(self.lengths.tolist()))}"
            )
        return self.subset(keep)

    def split(self, test_size: float = 0.3, seed: int = 0) -> tuple[ContrastSet, ContrastSet]:
        """Deterministic shuffled split into (train, test); `test_size` is a share in (0, 1)."""
        if not 0.0 < test_size < 1.0:
            raise AscaleError(f"test_size must lie in (0, 1), got {test_size}")
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        n_test = max(1, round(len(order) * test_size))
        if n_test >= len(order):
            raise AscaleError(f"{len(self)} prompt(s) are too few to split with {test_size=}")
        return self.subset(sorted(order[n_test:])), self.subset(sorted(order[:n_test]))

    def rows(self) -> list[dict[str, str]]:
        """The rows as dictionaries, ready for JSON."""
        return [
            {"prompt": p, "correct": c, "wrong": w}
            for p, c, w in zip(self.prompts, self.correct, self.wrong, strict=True)
        ]

    def to_jsonl(self, path: str | Path) -> Path:
        """Write one ``{"prompt", "correct", "wrong"}`` object a line."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for row in self.rows():
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        return path


def load_jsonl(path: str | Path, model: Any) -> ContrastSet:
    """Read a jsonl contrast set and tokenise it for `model`.

    Example:
        >>> data = load_jsonl("ccc.jsonl", model)  # doctest: +SKIP
    """
    path = Path(path)
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise AscaleError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise AscaleError(f"{path}:{lineno}: expected an object, got {row!r}")
            rows.append(row)
    return ContrastSet.from_rows(rows, model)


def _answer_ids(
    model: Any, answers: Sequence[str], prompts: Sequence[str], kind: str
) -> Int[Tensor, " batch"]:
    ids = []
    for i, answer in enumerate(answers):
        pieces = models.answer_token_ids(model, answer)
        if len(pieces) != 1:
            raise AnswerTokenError(
                f"row {i} ({prompts[i]!r}): the {kind} answer {answer!r} is {len(pieces)} "
                f"tokens {models.str_tokens(model, torch.tensor(pieces))}, not one; answers must "
                "be single tokens (mind the leading space)"
            )
        ids.append(pieces[0])
    return torch.tensor(ids, dtype=torch.long)
