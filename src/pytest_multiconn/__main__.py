"""``python -m pytest_multiconn`` is the ``multiconn`` command."""

from pytest_multiconn.cli import main

raise SystemExit(main())
