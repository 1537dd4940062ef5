"""The steering kinds: interventions trained by `ascale.fit` under the ``beta`` dial.

A steering intervention edits each activation at its sites by a rule of its own (`_edit`:
``h * (1 + beta * alpha)``, ``h + beta * v``, ...) with ``beta = 0`` the clean model, ``+1``
towards the wrong answer and ``-1`` back. What it shares is here: the hook that applies the
edit at the bound positions (and leaves the tokens a generation adds alone), and the fit
defaults `ascale.fit` takes for it (`FitDefaults`).
"""

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from ascale._checks import SQUARE_MAX
from ascale.errors import PromptLengthError
from ascale.interventions._base import Act, Beta, HookBeta, Intervention, _beta_like
from ascale.sites import Site

__all__ = ["FitDefaults", "SteeringIntervention"]


@dataclass(frozen=True)
class FitDefaults:
    """A steering kind's defaults for `ascale.fit` (``benchmarks/studies/results/fit_defaults.json``).

    ``lr`` is the rate under Adam (``sparsity="l1"``), ``proximal_lr`` under the proximal step
    (``sparsity="proximal"``): ProximalAdamax moves the parameter with the largest gradient by
    the rate and every other in proportion, so it needs a larger rate than Adam, which moves
    every parameter by about the rate.
    """

    lr: float
    steps: int
    batch_size: int
    sparsity: str
    proximal_lr: float

    def rate(self, sparsity: str) -> float:
        """The default learning rate under `sparsity`."""
        return self.proximal_lr if sparsity == "proximal" else self.lr


# Each kind's `fit_defaults` (`ActivationScalars`, `SteeringVectors`, `DynamicScalars`):
# Chosen by measurement (benchmarks/studies/results/fit_defaults.json; sites attn_out+mlp_out at every
# position, 70/30 splits, 2 CPU threads; test flips +1 / -1, KL, steps):
# - The stop. The rule before waited for every training prompt to flip by the margin; a few CCC
#   prompts never do, so every fit ran all 100 steps (the demo: 100 steps, 0.93 / 0.97, KL 0.58,
#   proximal scalars). The flips are met early: 95% of the CCC training prompts flip both ways by
#   step ~12. Stopping there: 1.00 / 1.00, KL 1.08 (scalars); 10 settling steps with a falling
#   rate after it: 22 steps, 1.00 / 1.00, KL 0.99; IOI 20 steps, 1.00 / 1.00, KL 0.43. A fixed
#   40-step cosine run: CCC 1.00 / 1.00, KL 0.80; IOI KL 0.33: KL is what the extra steps buy.
# - The settling steps: as many as reaching the target took (settle=None) rather than 10. The
#   held-out flips lag the training ones: dynamic scalars on pronouns_mixed reached the target
#   at step 61, flipped 0.71 / 1.00 of the held-out prompts after 10 more steps, 0.79 / 1.00
#   after 61 (KL 0.28 and 0.27), 0.86 / 1.00 running all 200; vectors on pronouns 0.64 -> 0.79
#   (KL 0.16 both). On CCC and IOI, which reach it in ~10 steps, it changes little (CCC
#   scalars 24 steps, 1.00 / 1.00, KL 0.98 against 22 steps, KL 0.99).
# - 200 steps for scalars (the small sets never reach the target, and their held-out flips
#   still rose at step 100) did not carry over: with settling as above, plural 0.79, antonyms
#   0.67, country_language 0.53 forward, against 0.79 / 0.80 / 0.60 at 100.
# - vectors: lr 0.1 moves each of a vector's 576 numbers by 0.1 at the first Adam step, and the
#   L1 term then dominated all 100 steps (CCC loss 300 -> 9.7; 1.00 / 1.00, KL 0.90, 584 of 720
#   vectors active); lr 0.01: 19 steps, 0.98 / 1.00, KL 0.88 (40 steps: 0.98 / 0.98, KL 0.71,
#   217 active); lr 0.001 over 40 steps: 0.93 / 0.97, KL 0.49.
# - The small hand-written sets (35 train / 15 test) never reach the flip target, so they run
#   every step, as before (plural 100 steps: 0.79 / 1.00 both times). 40 steps there gave 0.57
#   (plural) and 0.60 (antonyms) forward; no setting tried reached 0.85 forward on antonyms and
#   country_language (lambda_min 1e-3, margin 4, lr 0.3, shared positions, lambda_faith 0.3);
#   lambda_min 1e-3 reached 0.86 on plural. Stopping on a validation split stopped too early.
# - dynamic: lr 0.01 (lr 0.1 gave KL 3.9 on mixed lengths).
# - Under the proximal step (benchmarks/studies/results/tradeoffs.json: 8 lambda_min values, 20 steps at
#   batch 16 on CCC, 40 on IOI, best test flips +1 / -1): vectors at 0.01 reached only 0.82 / 0.95
#   (CCC) and 0.13 / 1.00 (IOI), at 0.1 0.98 / 0.97 and 0.98 / 0.98; scalars at 0.1 reached 0.98
#   / 1.00 on CCC (0.3: the top of the curve worse, KL 0.92-1.03) and 0.88 / 1.00 on IOI (0.3:
#   1.00 / 1.00). 0.1 for both; dynamic not measured there (its Adam rate).
# Maps use the proximal fit (compare's sparse map).


class SteeringIntervention(Intervention):
    """An intervention `ascale.fit` trains with the ``beta`` dial: `_edit` says how it edits
    an activation; `fit_defaults` are its settings for `ascale.fit`."""

    #: `ascale.fit`'s settings for this kind where the call leaves them at ``None``
    fit_defaults: ClassVar[FitDefaults]

    @abstractmethod
    def _edit(self, act: Act, param: Float[Tensor, "#pos ..."], beta: HookBeta) -> Act:
        """The edited activation, ``param`` broadcast to ``act`` (``[pos, *unit]``)."""

    def _hook(self, site: Site, k: int, beta: Beta, tracker: dict[str, int]) -> Any:
        name = site.hook_name(site.layers[k])

        def hook(act: Act, hook: Any) -> Act:
            # float32 edit, returned in the activation's dtype (bfloat16 models stay bfloat16)
            edited = edit(act)
            if self._finite is not None:  # a finite beta times a parameter may overflow
                low, high = torch.aminmax(edited.detach())  # one pass, no copy; NaN: False
                self._finite.append((high <= SQUARE_MAX) & (low >= -SQUARE_MAX))
            return edited.to(act.dtype)

        def edit(act: Tensor) -> Tensor:
            n = act.shape[1]
            # on the device of the activation: in a model split over devices (device_map) the
            # hook of each layer runs where that layer lives; autograd carries the gradient back
            param = self.params[site.name][k].to(act.device)
            if not self.position_tied:
                return self._edit(act, param, _beta_like(beta, act))
            if self._start + n == self.n_pos:
                tracker[name] = n
                full = self._full(param)[self._start :]
                return self._edit(act, full, _beta_like(beta, act))
            if tracker.get(name, 0) >= (self.n_pos or 0) and n == 1:
                return act  # a generated token beyond the trained prompt positions (KV cache)
            if n > (self.n_pos or 0) and tracker.get(name) == n - 1:
                # Generation without the KV cache: the sequence grows by one token a step;
                # the trained prompt positions are edited again, the generated ones left alone.
                tracker[name] = n
                full = self._full(param)
                grown = torch.cat([full, full.new_zeros((n - full.shape[0], *full.shape[1:]))])
                return self._edit(act, grown, _beta_like(beta, act))
            raise PromptLengthError(
                f"{type(self).__name__} is tied to prompts of {self.n_pos} tokens, got {n} at "
                f"{name}; filter with `data.with_length({self.n_pos})`, or use "
                "positions='shared' or DynamicScalars for prompts of other lengths"
            )

        return hook

    def _full(self, param: Float[Tensor, " slot *unit"]) -> Float[Tensor, " pos *unit"]:
        """Slot parameters scattered to every position (zeros, the identity, elsewhere)."""
        if self.positions == "all":
            return param
        assert isinstance(self.positions, tuple) and self.n_pos is not None
        index = torch.tensor(self.positions, device=param.device)
        full = param.new_zeros((self.n_pos, *param.shape[1:]))
        return full.index_copy(0, index, param)
