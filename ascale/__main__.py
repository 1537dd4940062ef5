"""``python -m ascale``: the ``ascale`` command (``python -m ascale --help``)."""

from ascale.cli import main

raise SystemExit(main())
