"""Tests of `ascale.interventions`, one file per module (a package, so that basenames may repeat across wings)."""
