"""Errors a user can fix, and how scripts report them: a message and exit code 2, no traceback."""

from __future__ import annotations

import argparse
import logging
import sys


class UserError(Exception):
    """A problem the user can fix; scripts print its message and exit 2 without a traceback."""


def run_main(main, args, resumable: bool = False) -> None:
    """Run a script's ``main`` and turn a UserError into a clean message and exit code 2, and Ctrl-C
    into a line saying so (and, where the run saves as it goes, that the same command goes on from
    what it saved) and exit code 130."""
    try:
        main(args)
    except UserError as err:
        logging.getLogger("alias_label").error("%s", err)
        sys.exit(2)
    except KeyboardInterrupt:
        logging.getLogger("alias_label").error(
            "interrupted%s", "; rerun the same command to go on from what was saved" if resumable else "")
        sys.exit(130)


def check_bounds(parser: argparse.ArgumentParser, args: argparse.Namespace, at_least: dict | None = None,
                 above: dict | None = None) -> None:
    """Refuse a numeric flag outside its range, naming the flag, its value and the bound, before
    anything loads: "--batch-size 0 must be at least 1". A flag that is None (not given, and with
    no default) is not checked; NaN is refused."""
    for bounds, word, within in ((at_least or {}, "at least", lambda value, bound: value >= bound),
                                 (above or {}, "above", lambda value, bound: value > bound)):
        for name, bound in bounds.items():
            value = getattr(args, name)
            if value is not None and not within(value, bound):
                parser.error(f"--{name.replace('_', '-')} {value:g} must be {word} {bound:g}")
