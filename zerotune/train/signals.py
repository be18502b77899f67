"""Stopping on a signal: SIGTERM (a preempted VM, a Colab session ending, `kill`) or Ctrl-C lets the
current step finish, a checkpoint be written, and the run exit with a message saying how to resume."""

from __future__ import annotations

import signal
import sys


class StopFlag:
    """SIGTERM / SIGINT ask training to finish the current step, checkpoint and exit."""

    def __init__(self):
        self.signal: int | None = None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum
        print(f"\n{signal.Signals(signum).name}: finishing this step, saving a checkpoint...", file=sys.stderr)

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def __call__(self) -> bool:
        return self.signal is not None


class Interrupted(RuntimeError):
    """Training stopped on a signal after saving a checkpoint."""

    def __init__(self, step: int, signum: int):
        super().__init__(f"stopped at step {step} ({signal.Signals(signum).name}); checkpoint saved. "
                         "Re-run the same command to resume.")
        self.exit_code = 128 + signum
