"""The one exception type users see: a problem with their input, stated in one line with the fix."""


class SynthaugError(Exception):
    """Bad input or an impossible request. The CLI prints it as one line and exits with code 2."""

    exit_code = 2


class EnvironmentFailure(SynthaugError):
    """The machine, not the input, failed (disk full, read-only folder). Exit code 1."""

    exit_code = 1


class Interrupted(Exception):
    """A run stopped by Ctrl-C or SIGTERM at a safe point; ``--resume`` continues it. Exit code 130."""

    exit_code = 130
