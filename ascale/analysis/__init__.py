"""The analysis wing: rankings of components, and how each holds up as a circuit.

| module | offers |
|---|---|
| `ascale.analysis.attribution` | `rank_components` (what an intervention's class reads out) |
| `ascale.analysis.patching` | `activation_patching`, `attribution_patching` |
| `ascale.analysis.results` | `AttributionResult`, the type every ranking is |
| `ascale.analysis.circuits` | `score_circuits` and `CircuitResult` (node level, MIB's protocol) |
| `ascale.analysis.edges` | edge-level circuits: EAP, EAP-IG and their scoring |
| `ascale.analysis.agreement` | `agreement` and `AgreementResult` |
| `ascale.analysis.cumulative` | `cumulative_effect`, `refit_top_k` |
| `ascale.analysis.compare` | `compare` and `CompareResult` |
| `ascale.analysis.compare_methods` | compare's methods, one class each (`METHODS`) |
| `ascale.analysis.sweep` | `sweep` over the objective's weights |
"""
