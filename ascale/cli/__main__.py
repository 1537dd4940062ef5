"""``python -m ascale.cli``: the ``ascale`` command."""

from ascale.cli import main

raise SystemExit(main())
