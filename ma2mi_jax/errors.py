"""The errors this project raises on purpose: their message says what is wrong and what to do.

The scripts (`ma2mi_jax.cli.run`) print a `UserError` as one `error: <message>` paragraph on
stderr, without a traceback, and exit with `EXIT_CODE`; `--debug` (or MA2MI_DEBUG=1) shows the
traceback. Any other exception is a bug and keeps its traceback. Each class also derives from the
built-in type callers would expect (ValueError, FileNotFoundError, FileExistsError).
"""

from __future__ import annotations

EXIT_CODE = 2  # absl's usage errors exit 1; a reported project error exits 2
# A job stopped by SIGTERM after saving a checkpoint: sysexits' EX_TEMPFAIL, "try again later".
PREEMPTED_EXIT_CODE = 75


class UserError(Exception):
    """An error raised on purpose; its message names the file, row, clip or config key involved."""


class ConfigError(UserError, ValueError):
    """A config value is invalid; the message names each offending key and what to do."""


class WorkdirError(UserError, ValueError):
    """The run's workdir cannot be used (a file, not creatable, not writable, another run's plan)."""


class InitError(UserError, ValueError):
    """`config.init` does not name a usable starting point (pre-training workdir, export, weights)."""


class NotFoundError(UserError, FileNotFoundError):
    """A path the user gave does not exist or is not what it should be."""


class ExistsError(UserError, FileExistsError):
    """An output the user named exists already and would be overwritten."""


class DivergedError(UserError, FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the step and the last good checkpoint."""


class PreemptedError(UserError):
    """The job was told to stop (SIGTERM) and saved a checkpoint; the same command resumes it."""


class DiskFullError(UserError, OSError):
    """No space left (or the quota reached) while writing; the message names the path and what is intact."""
