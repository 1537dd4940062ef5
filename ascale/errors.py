"""One error base class, with a subclass for each way user input can be wrong."""

import difflib
from collections.abc import Iterable

__all__ = [
    "AnswerTokenError",
    "AscaleError",
    "AscaleWarning",
    "IncompatibleModelError",
    "ModelNotAvailableError",
    "PromptLengthError",
    "SavedFileError",
    "UnknownSiteError",
]


class AscaleError(Exception):
    """Base class of every error `ascale` raises on bad input."""


class AscaleWarning(UserWarning):
    """Input that works but is likely a mistake (an answer without its leading space, ...)."""


class UnknownSiteError(AscaleError, KeyError):
    """A site, hook name, layer or head the model does not have."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class AnswerTokenError(AscaleError, ValueError):
    """An answer string that is not exactly one token for the model's tokenizer."""


class PromptLengthError(AscaleError, ValueError):
    """Prompts whose token length does not fit a position-tied intervention."""


class IncompatibleModelError(AscaleError, ValueError):
    """A saved intervention loaded into a model of another shape."""


class ModelNotAvailableError(AscaleError, OSError):
    """A model that cannot be loaded here (offline and not cached, unknown path, ...)."""


class SavedFileError(AscaleError, ValueError):
    """A saved intervention whose files are missing, damaged, edited or from another version."""


def closest(name: str, valid: Iterable[str], n: int = 3) -> str:
    """Format the closest valid names to `name`, for error messages."""
    matches = difflib.get_close_matches(name, list(valid), n=n, cutoff=0.4)
    return ", ".join(repr(m) for m in matches) if matches else "none close"
