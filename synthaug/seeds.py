"""Seeds: every random draw in synthaug starts from a seed derived here from the recipe's ``seed``.

Derived seeds depend only on what they name (a training step and rank, an image's class and index, an
evaluation run), never on what ran before, so batch size, process count and interruptions change nothing.
"""

from __future__ import annotations

import numpy as np


def step_seed(seed: int, step: int, rank: int, stream: int) -> int:
    """A 63-bit seed for one (step, rank, stream): every random draw of a training step comes from here."""
    return int(np.random.SeedSequence([seed, step, rank, stream]).generate_state(2, np.uint64)[0] >> np.uint64(1))
