"""GPU scripts: measured once on a lent GPU machine (see docs/scale.md), prepared here."""
