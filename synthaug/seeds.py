"""Seeds: every random draw in synthaug starts from a seed derived here from the recipe's ``seed``.

Derived seeds depend only on what they name (a training step and rank, an image's class and index, an
evaluation run), never on what ran before, so batch size, process count and interruptions change nothing.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(seed: int, label: int, index: int) -> int:
    """The seed of the ``index``-th synthetic image of class ``label``: a 63-bit hash, stable across versions."""
    digest = hashlib.blake2b(f"synthaug/{seed}/{label}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def step_seed(seed: int, step: int, rank: int, stream: int) -> int:
    """A 63-bit seed for one (step, rank, stream): every random draw of a training step comes from here."""
    return int(np.random.SeedSequence([seed, step, rank, stream]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def run_seeds(seed: int) -> dict[str, int]:
    """Independent child seeds for each random source of an evaluation run (validation split, weight init,
    batch order, augmentation), all derived from the run's seed: same seed, same run."""
    names = ("split", "init", "order", "augment")
    return dict(zip(names, np.random.SeedSequence(seed).generate_state(len(names)).tolist(), strict=True))
