"""Helpers for tests that drive the real CLI: the smoke recipe, running ``synthaug`` in-process, checking its
one-line messages, and copying and comparing run directories. Import them with ``from helpers import …``
(tests/ is on ``sys.path``); the shared fixtures are in tests/conftest.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from synthaug.cli import cli

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="synthaug")


def message_lines(stderr: str) -> list[str]:
    """The lines of stderr a terminal shows, less finished progress bars (tqdm frames, redrawn with ``\\r``)."""
    lines = []
    for line in stderr.splitlines():
        shown = line.split("\r")[-1].strip()
        if shown and not ("%|" in shown and shown.endswith("]")):
            lines.append(shown)
    return lines


def assert_one_line(result, code: int, *expected: str) -> str:
    """Exit ``code``; on stderr exactly one line, the ``synthaug:`` message; no traceback anywhere."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"an exception escaped the CLI: {result.exception!r}")
    lines = message_lines(result.stderr)
    assert result.exit_code == code, f"exit {result.exit_code}, expected {code}:\n{result.output}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    assert "Traceback" not in result.output
    prefix = "synthaug: error: " if code in (1, 2) else "synthaug: "
    assert lines[0].startswith(prefix), lines[0]
    for text in expected:
        assert text in lines[0], f"{lines[0]!r} does not mention {text!r}"
    return lines[0]


def snapshot(root: Path) -> dict[str, tuple[bytes, int | None]]:
    """Every file below ``root``: its bytes and its modification time (ns). In a run's decode cache
    (``cache/``) the time marks when an array was last read (``images._cached_npy``), so only bytes count."""
    return {p.relative_to(root).as_posix(): (p.read_bytes(), None if p.relative_to(root).parts[0] == "cache"
                                             else p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def copy_run(run: Path, dest: Path, *ignore: str) -> Path:
    """A copy of the run directory ``run`` at ``dest``, less what matches the glob patterns ``ignore``."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns(*ignore) if ignore else None)
    return dest


def generated(run: Path, *overrides: str):
    """``synthaug generate`` on ``run`` with ``overrides`` → (images int16 NHWC, generation.json, dataset card)."""
    import json

    import datasets
    import numpy as np

    from synthaug import stages
    from synthaug.config import load_recipe

    stages.generate(load_recipe(run, overrides=list(overrides)), progress=False)
    ds = datasets.load_from_disk(str(run / "synthetic"))
    images = np.stack([np.asarray(im, dtype=np.int16) for im in ds["image"]])
    info = json.loads((run / "synthetic" / "generation.json").read_text())
    return images, info, (run / "synthetic" / "README.md").read_text()
