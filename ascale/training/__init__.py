"""The training wing: learning interventions on the one training loop.

| module | offers |
|---|---|
| `ascale.training.fit` | `fit` (steering interventions under the beta dial) and `FitResult` |
| `ascale.training.circuit` | `fit_circuit` (circuit scalars: a sufficiency fit) |
| `ascale.training.objective` | `Objective` (effectiveness, faithfulness, minimality) |
| `ascale.training.metrics` | `evaluate` and `Metrics` |
| `ascale.training.optim` | `ProximalAdamax`, `SPARSITY` |
| `ascale.training.positions` | where a ``positions="auto"`` fit steers |
| ``_loop`` | the one loop both fits run on (batches, stop, interruption, progress) |
| ``_steering``, ``_passes``, ``_memory`` | `fit`'s trainer and stop rules, its passes, its memory check |
"""
