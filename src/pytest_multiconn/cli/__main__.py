"""``python -m pytest_multiconn.cli`` is the ``multiconn`` command, like ``-m pytest_multiconn``."""

from pytest_multiconn.cli import main

raise SystemExit(main())
