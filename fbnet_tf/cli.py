"""What the command-line tools share: arguments checked up front, exit codes, and TensorFlow kept quiet.

Exit codes: 0 done, 1 the work failed, 2 a usage error (a bad argument or config value; argparse's own code).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys

FAILED = 1
USAGE = 2


def integer(minimum: int | None = None):
    """argparse `type=` for an integer >= `minimum`: `--every 0` is refused naming the option and the value."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or (minimum is not None and value < minimum):
            raise argparse.ArgumentTypeError(f"expected an integer{f' >= {minimum}' if minimum is not None else ''}"
                                             f", got {text!r}")
        return value
    return parse


def number(low: float | None = None, high: float | None = None):
    """argparse `type=` for a finite number in [low, high]."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            bounds = (f" in [{low:g}, {high:g}]" if low is not None and high is not None
                      else f" >= {low:g}" if low is not None else f" <= {high:g}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"expected a number{bounds}, got {text!r}")
        return value
    return parse


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ info and warning lines (CPU features, oneDNN, "Local rendezvous is aborting") off a
    command's terminal; errors still show. A TF_CPP_MIN_LOG_LEVEL the user set is left as it is."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if "tensorflow" not in sys.modules:
        # The oneDNN notice is printed at import whatever the level: import with stderr sent to /dev/null (an
        # import error still surfaces as a Python exception, printed after stderr is back).
        with _stderr_silenced():
            import tensorflow  # noqa: F401


@contextlib.contextmanager
def _stderr_silenced():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
