"""The model `ascale` needs, as a `typing.Protocol`: TransformerLens' hook-point interface.

A `TransformerBridge` (transformer-lens 4.x, what `ascale.load_model` returns) and an older
`HookedTransformer` both satisfy it. Functions that take a model are annotated with it instead of
`Any`; everything beyond it (the Hugging Face model behind a Bridge, ``original_model``) is read
in `ascale._tl` alone. It is runtime-checkable, so the test run's beartype checks see it.
"""

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from torch import Tensor, nn

__all__ = ["Configured", "HookedModel"]


@runtime_checkable
class Configured(Protocol):
    """Anything with a TransformerLens config (``cfg``): enough for the shape and memory sums."""

    cfg: Any


@runtime_checkable
class HookedModel(Configured, Protocol):
    """What `ascale` reads of a model: ``cfg`` (``n_layers``, ``n_heads``, ``d_model``,
    ``d_head``, ``d_vocab``, ``device``), its tokenizer, ``to_tokens``, a forward pass, its
    parameters, and hooks attached by name through ``hooks()``.

    ``hook_dict`` (the hook points by name) is declared for the type checker only: on a Bridge
    it is a property that copies the hook registry (1.4 ms for SmolLM2's 1,725 hook points), and
    the run-time check of the test run would copy it at every call of every function that takes
    a model.
    """

    if TYPE_CHECKING:

        @property
        def hook_dict(self) -> Mapping[str, Any]: ...

    tokenizer: Any

    def __call__(self, input: Any, *args: Any, **kwargs: Any) -> Any: ...

    def hooks(
        self, fwd_hooks: Any = ..., *args: Any, **kwargs: Any
    ) -> contextlib.AbstractContextManager[Any]: ...

    def to_tokens(self, input: Any, *args: Any, **kwargs: Any) -> Tensor: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def generate(self, input: Any, *args: Any, **kwargs: Any) -> Any: ...
