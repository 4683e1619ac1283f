"""SIGTERM / SIGINT → finish the current step, write a checkpoint, exit with EXIT_PREEMPTED.

Preemptible machines send SIGTERM a little before they go; torchrun forwards it to every
worker. The handler only sets a flag; the loop reads it between optimizer steps. A second
SIGINT (Ctrl-C twice) interrupts immediately.
"""

from __future__ import annotations

import signal

# EX_TEMPFAIL of sysexits.h: stopped by a signal after writing a checkpoint; resume with --resume.
# Not 0, so a scheduler never reads a preempted job as a finished one.
EXIT_PREEMPTED = 75


class StopRequest:
    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now, without a checkpoint
        self.signal_name = signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        return self.signal_name is not None
