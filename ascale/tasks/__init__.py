"""Task builders: contrast sets of prompts with a correct and a wrong single-token answer.

- `ccc`: Country-Capital Conflicts, a false capital fact in context ("Rome is the capital of
  France. Rome is in" -> " Italy" vs " France"); `ccc_corrupt` swaps in another false country.
- `ioi`: Indirect Object Identification (Wang et al., 2023), ABBA and BABA; `ioi_corrupt` is
  their ABC corruption with three fresh names.

Every builder is deterministic for a seed and, by default, keeps prompts of one token length
(``length="modal"``) so position-tied interventions apply; ``length=None`` keeps them all.

Example:
    >>> from ascale.tasks import ccc, ioi
    >>> data = ioi(model, n=100)  # the tiny model here knows seven one-token names
    >>> data.prompts[0]
    'When Alice and Bob went to the store, Bob gave a drink to'
"""

from ascale.tasks.ccc import ccc, ccc_corrupt
from ascale.tasks.ioi import ioi, ioi_corrupt

__all__ = ["ccc", "ccc_corrupt", "ioi", "ioi_corrupt"]
