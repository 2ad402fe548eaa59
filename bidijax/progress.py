"""Progress with an ETA for ``bidijax train`` and ``bidijax sweep``.

On a terminal: one ``tqdm`` bar redrawn in place (units done / total, elapsed, ETA, a status
text). Elsewhere (CI, a log file): one plain line roughly every tenth of the way, plus the first
and the last, each with the same numbers. The ETA uses the rate of the units done after the
first one this process did (that one carries start-up and compilation; a resumed run does not
look faster than it is either).
"""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class Bar:
    """``total`` units of work, ``done`` of them finished before this process started."""

    def __init__(self, total: int, desc: str, done: int = 0, stream=None, quiet: bool = False, lines: int = 10):
        self.total, self.desc, self.done, self.start_done = max(1, int(total)), desc, int(done), int(done)
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.every = max(1, self.total // lines)
        self.start = time.perf_counter()
        self.tty = not quiet and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._bar = None
        self._first = None  # (time, units done) at this process's first update
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.done, desc=desc, file=self.stream, dynamic_ncols=True,
                             unit="it", smoothing=0.1)  # fmt: skip

    def eta(self) -> float:
        """Seconds left at the rate since this process's first update (``inf`` until a second one)."""
        if self._first is None:
            return float("inf")
        t, done = self._first
        rate = (self.done - done) / max(time.perf_counter() - t, 1e-9)
        return (self.total - self.done) / rate if rate > 0 else float("inf")

    def line(self, status: str = "") -> str:
        elapsed = time.perf_counter() - self.start
        head = f"{self.desc} {self.done}/{self.total} [{_clock(elapsed)} elapsed, ETA {_clock(self.eta())}]"
        return f"{head} {status}".rstrip()

    def update(self, n: int, status: str = "") -> None:
        """``n`` more units done; ``status`` is shown beside the numbers."""
        before, self.done = self.done, min(self.total, self.done + int(n))
        if self._first is None:
            self._first = (time.perf_counter(), self.done)
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(status, refresh=False)
            self._bar.update(self.done - before)
        elif self.done // self.every > before // self.every or self.done == self.total or before == self.start_done:
            print(self.line(status), file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
