"""The one exception type users see, and the pieces of its one-line messages.

A message names the problem and the fix; ``did_you_mean`` and ``shorten`` keep every module's messages in one
shape and one line.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class SynthaugError(Exception):
    """Bad input or an impossible request. The CLI prints it as one line and exits with code 2."""

    exit_code = 2


class EnvironmentFailure(SynthaugError):
    """The machine, not the input, failed (disk full, read-only folder). Exit code 1."""

    exit_code = 1


class Interrupted(Exception):
    """A run stopped by Ctrl-C or SIGTERM at a safe point; ``--resume`` continues it. Exit code 130."""

    exit_code = 130


def did_you_mean(word: str, choices: Iterable[str], *, cutoff: float = 0.6, prefix: str = "",
                 quoted: bool = False) -> str:
    """The hint after a message's unknown ``word``: ``"; did you mean X?"`` naming the closest of ``choices``
    (after ``prefix``, e.g. the section of a key), or ``""`` when none is close.

    ``quoted`` gives ``" (did you mean 'X'?)"``, for names users make up (class names): they may hold
    spaces or a ``;``, which the bare form would run into the rest of the message.
    """
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    if not close:
        return ""
    return f" (did you mean {prefix + close[0]!r}?)" if quoted else f"; did you mean {prefix}{close[0]}?"


def shorten(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: a one-line message must stay one readable line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}…{text[-4:]}"
