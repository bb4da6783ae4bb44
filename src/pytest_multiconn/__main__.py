"""``python -m pytest_multiconn`` is the ``multiconn`` command."""

from .cli import main

raise SystemExit(main())
