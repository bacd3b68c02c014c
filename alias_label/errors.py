"""Errors a user can fix, and how scripts report them: a message and exit code 2, no traceback."""

from __future__ import annotations

import logging
import sys


class UserError(Exception):
    """A problem the user can fix; scripts print its message and exit 2 without a traceback."""


# How to continue an interrupted run, by what the script saves as it goes.
RESUME_HINTS = {"checkpoints": "; rerun the same command to go on from what was saved",
                "parts": "; rerun the same command with --resume to go on from what was saved"}


def run_main(main, args, resumable: str | None = None) -> None:
    """Run a script's ``main`` and turn a UserError into a clean message and exit code 2, and Ctrl-C
    into a line saying so and exit code 130; where the run saved ``resumable`` ("checkpoints" that a
    rerun goes on from, or "parts" that --resume does), the line says how to continue it."""
    try:
        main(args)
    except UserError as err:
        logging.getLogger("alias_label").error("%s", err)
        sys.exit(2)
    except KeyboardInterrupt:
        logging.getLogger("alias_label").error("interrupted%s", RESUME_HINTS.get(resumable, ""))
        sys.exit(130)
