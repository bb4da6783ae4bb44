"""Deprecated alias of :mod:`pytest_multiconn.suite` (the fault-injection suite moved there)."""

import warnings

from pytest_multiconn.suite import *  # noqa: F403 - a deprecated alias re-exports everything
from pytest_multiconn.suite import __all__  # noqa: F401 - re-exported

warnings.warn(
    "pytest_multiconn.testing is deprecated; import from pytest_multiconn.suite instead",
    DeprecationWarning,
    stacklevel=2,
)
