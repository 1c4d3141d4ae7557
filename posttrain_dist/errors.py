"""Errors that are the user's to fix: a bad config, missing data, a wrong data format.

Each one carries a message that names the problem and the fix. Recipes and the command line
print such an error without a traceback and exit with status 2; anything else is a bug and
keeps its traceback.
"""

import functools
import sys


class UserError(ValueError):
    """A mistake in the user's config or data, reported with the fix."""


class ConfigError(UserError):
    """A recipe config (YAML or command line) that cannot run."""


class DataError(UserError):
    """Data that is missing, empty or in a format the method does not take."""


def warn(message: str) -> None:
    """A config that runs but is probably not what the user meant (a learning rate far out of range): said on
    stderr, and the run goes on."""
    print(f"posttrain-dist: warning: {message}", file=sys.stderr, flush=True)


def report_user_errors(main):
    """Decorate a `main` so that a `UserError` ends the process with its message and status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"posttrain-dist: {type(error).__name__}: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapper
