"""Errors that end a stage with one clear line instead of a traceback."""

from __future__ import annotations

import sys
from typing import Callable


class SqloraError(Exception):
    """A problem the user can fix; its message is the whole report."""


class ParamError(SqloraError):
    """A wrong value in params.yaml; the message names the key and the allowed values."""


def run_stage(main: Callable[[], object]) -> None:
    """Run a stage's main(); a SqloraError (or Ctrl-C) ends it with one line and exit status 1."""
    try:
        main()
    except SqloraError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
