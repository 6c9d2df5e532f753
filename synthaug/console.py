"""What synthaug prints while it works: a line per stage, notes that matter, progress bars, the summary.

Third-party chatter stays out of the console unless ``--verbose``: Lightning's banners ("GPU available …"),
tips, model-summary tables and "`Trainer.fit` stopped" lines (all logged at INFO), and deprecation warnings
raised inside libraries. Warnings that are about the user's data or settings are synthaug's own and
always shown.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

_LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning", "lightning.pytorch", "lightning.fabric")
# Categories libraries use for deprecations: the user cannot act on them, so they wait for --verbose.
_LIBRARY_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
_state = {"verbose": False}


class _StderrHandler(logging.StreamHandler):
    """Log records as bare lines on the current ``sys.stderr`` (a test runner may swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure(verbose: bool = False) -> None:
    """Set what the console shows for this process and the worker processes it spawns.

    Call it before the libraries are imported where possible: Lightning adds its own INFO handler at import
    unless the root logger has one, so a root handler is installed here (INFO with ``verbose``, else
    WARNING); loggers of an already imported Lightning are set directly.
    """
    _state["verbose"] = verbose
    level = logging.INFO if verbose else logging.WARNING
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        root.addHandler(handler)
    handler.setLevel(level)
    for name in _LIGHTNING_LOGGERS:
        if name in sys.modules:
            logging.getLogger(name).setLevel(level)
    if verbose:
        return
    for category in _LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=r".*(does not have many workers|LeafSpec).*")
    # Spawned worker processes read this at start-up.
    os.environ["PYTHONWARNINGS"] = ",".join(f"ignore::{c.__name__}" for c in _LIBRARY_WARNINGS)


def verbose() -> bool:
    """Whether ``--verbose`` asked for the libraries' own output (model summaries, banners)."""
    return _state["verbose"]


def stage(name: str, detail: str = "") -> None:
    """``synthaug NAME: DETAIL`` on stdout, on a line of its own between progress bars (stderr keeps the
    one-line errors and warnings)."""
    from tqdm import tqdm

    tqdm.write(f"synthaug {name}: {detail}" if detail else f"synthaug {name}", file=sys.stdout)
