"""Worker processes that do not outlive their parent.

A pool worker whose parent is killed (SIGKILL, the OOM killer) is orphaned: multiprocessing notices only when
the worker next talks to its parent, and a worker busy decoding a video may run for minutes at 100% CPU. On
Linux the kernel can deliver a signal to a process when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere a
watcher thread polls the parent's PID.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def exit_with_parent(parent_pid: int, poll_seconds: float = 1.0) -> None:
    """Make this (worker) process end when `parent_pid`, the process that started it, ends. Call it first thing
    in a pool's initializer, with the parent's `os.getpid()` passed in the initializer's arguments."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: the watcher below still ends the worker
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid, poll_seconds), daemon=True,
                     name="exit-with-parent").start()


def _watch_parent(parent_pid: int, poll_seconds: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(poll_seconds)
    os._exit(1)
