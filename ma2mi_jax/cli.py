"""What the scripts share: running an absl main with readable errors for bad flags and bad input.

An error the project raises on purpose (`ma2mi_jax.errors.UserError`: data, config, workdir,
checkpoint, weights) ends the script with one `error: <message>` paragraph on stderr and exit code
`errors.EXIT_CODE`, no traceback; a job stopped by SIGTERM (`errors.PreemptedError`) prints where it
stopped and exits with `errors.PREEMPTED_EXIT_CODE`; `--debug` or the environment variable
MA2MI_DEBUG=1 shows the traceback as well. Any other exception is a bug and shows its traceback.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import os
import sys
from collections.abc import Callable

from absl import app, flags
from absl import logging as absl_logging

from ma2mi_jax import errors
from ma2mi_jax.cpu import allocator

DEBUG_ENV = "MA2MI_DEBUG"
_DEBUG = flags.DEFINE_bool(
    "debug", False, f"Show the Python traceback of a reported error (also: {DEBUG_ENV}=1)."
)


def check_no_extra_args(argv: list[str]) -> None:
    """Refuse stray positional arguments (usually a mistyped flag)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])} (flags start with --)")


def _unknown_key_message(error: Exception, argv: list[str]) -> str:
    """Name the `--config.*` override whose key does not exist."""
    detail = str(error.args[0] if error.args else error)
    with contextlib.suppress(ValueError, SyntaxError):
        detail = str(ast.literal_eval(detail))  # ml_collections wraps a KeyError's repr
    missing = detail.split("\n")[0].strip("'\"")
    overrides = [a.split("=")[0] for a in argv if a.startswith("--config.")]
    culprit = next((o for o in overrides if missing in o.split(".")), None)
    hint = detail.split("\n", 1)[1] if "\n" in detail else ""
    where = f"'{culprit}'" if culprit else f"'{missing}'"
    return f"error: unknown config key {where}: the config has no field '{missing}'. {hint}".strip()


def run(main: Callable[[list[str]], None]) -> None:
    """Run `main` under absl; an override of a config key that does not exist exits with its name."""
    if any(a.split("=")[0] in _HELP_FLAGS for a in sys.argv[1:]):
        flags.FLAGS.mark_as_parsed()
        app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)  # absl's own --help exits 1
    remaining = _parse_or_exit()
    _quiet_library_info()
    allocator.tune_allocator()
    app.run(reporting_errors(main), flags_parser=lambda _: remaining)  # parsed once: see _parse_or_exit


def debug_requested() -> bool:
    """Whether --debug was given or MA2MI_DEBUG is set to a true value."""
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    return (flags.FLAGS.is_parsed() and bool(_DEBUG.value)) or env not in ("", "0", "false", "no")


def error_text(error: BaseException) -> str:
    """`error: <message>`, the one paragraph a reported error prints (blank lines dropped)."""
    lines = [ln.rstrip() for ln in str(error).strip().splitlines() if ln.strip()]
    return "error: " + "\n".join(lines or [type(error).__name__])


def reporting_errors(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    """`main` with every `UserError` turned into `error: <message>` on stderr and a non-zero exit."""

    def wrapped(argv: list[str]) -> None:
        try:
            main(argv)
        except errors.PreemptedError as stopped:
            sys.stdout.flush()
            print(str(stopped), file=sys.stderr, flush=True)
            sys.exit(errors.PREEMPTED_EXIT_CODE)
        except errors.UserError as error:
            if debug_requested():
                raise
            sys.stdout.flush()
            print(error_text(error), file=sys.stderr, flush=True)
            sys.exit(errors.EXIT_CODE)

    return wrapped


class _OwnInfoOnly(logging.Filter):
    """Pass warnings from everywhere, but info/debug lines only from this project."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "site-packages" not in record.pathname


def _quiet_library_info() -> None:
    """Keep the console readable: Orbax and Grain log every save and read at INFO through absl."""
    absl_logging.get_absl_handler().addFilter(_OwnInfoOnly())


_HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull", "--helpxml")


def _parse_or_exit() -> list[str]:
    """Parse the flags now so that a bad config key or argument ends with one clear line."""
    try:
        return flags.FLAGS(sys.argv)
    except (AttributeError, KeyError) as e:
        sys.exit(_unknown_key_message(e, sys.argv))
    except (flags.Error, ValueError) as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        if "Traceback" in str(e):  # config_flags embeds the config file's traceback
            lines = [lines[0], lines[-1]]
        sys.exit("error: " + "\n".join(lines) + "\nTry --help.")
