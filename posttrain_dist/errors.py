"""Errors that are the user's to fix: a bad config, missing data, a wrong data format.

Each one carries a message that names the problem and the fix. Recipes and the command line
print such an error without a traceback and exit with status 2; anything else is a bug and
keeps its traceback.
"""

import atexit
import functools
import sys


class UserError(ValueError):
    """A mistake in the user's config or data, reported with the fix."""


class ConfigError(UserError):
    """A recipe config (YAML or command line) that cannot run."""


class DataError(UserError):
    """Data that is missing, empty or in a format the method does not take."""


class RunFinished(Exception):
    """The output folder holds this very run, finished: nothing to do (exit status 0)."""


_cleanups: list = []


def at_exit(function) -> None:
    """Run `function` when the recipe's main returns or fails (`report_user_errors`), or at the latest at exit."""
    if not _cleanups:
        atexit.register(run_cleanups)
    _cleanups.append(function)


def run_cleanups() -> None:
    while _cleanups:
        try:
            _cleanups.pop()()
        except Exception:  # a cleanup never hides what ended the run
            pass


def warn(message: str) -> None:
    """A config that runs but is probably not what the user meant (a learning rate far out of range): said on
    stderr, and the run goes on."""
    print(f"posttrain-dist: warning: {message}", file=sys.stderr, flush=True)


def report_user_errors(main):
    """Decorate a `main` so that a `UserError` ends the process with its message and status 2, and a finished run
    with its note and status 0; either way the run's cleanups (its output folder's lock) run."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except RunFinished as finished:
            print(f"posttrain-dist: {finished}", flush=True)
            sys.exit(0)
        except UserError as error:  # (the newline ends a progress bar the error interrupted)
            print(f"\nposttrain-dist: {type(error).__name__}: {error}", file=sys.stderr)
            sys.exit(2)
        finally:
            run_cleanups()

    return wrapper
