"""Tests of `ascale.plot`, one file per module (a package, so that basenames may repeat across wings)."""
