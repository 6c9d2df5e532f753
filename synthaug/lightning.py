"""Deprecated alias: ``MixedDataModule`` lives in ``synthaug.torch_data`` (this name shadowed the library's)."""

import warnings

from synthaug.torch_data import MixedDataModule  # noqa: F401

warnings.warn("synthaug.lightning moved to synthaug.torch_data", DeprecationWarning, stacklevel=2)
