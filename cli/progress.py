"""A job's progress on stderr: a tqdm bar on a terminal; plain lines when
stderr is piped (CI, `2> log`), where a bar's carriage returns would be one
unreadable line written only at the end.

Plain lines say images done of the total, the rate of this run (images a
second, skipped images not counted) and the time left at that rate. One
comes as each method starts (`set_description`), at every `step_percent` of
the total, at least every `every_s` seconds while the job runs (so a slow
first image still shows the job is alive) and at the end.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

PLAIN_EVERY_S = 10.0
PLAIN_STEP_PERCENT = 10.0


def job_progress(total: int, *, stream: TextIO | None = None, every_s: float = PLAIN_EVERY_S,
                 step_percent: float = PLAIN_STEP_PERCENT, disable: bool = False):
    """A bar (stderr a terminal) or PlainProgress (otherwise) over `total`
    images; both have update(n), set_description(text), write(text) and are
    context managers."""
    stream = stream if stream is not None else sys.stderr
    if not disable and stream.isatty():
        from tqdm import tqdm

        class Bar(tqdm):
            def skipped(self, n: int) -> None:
                """n images done before this run: on the bar, not in its rate."""
                self.n += n
                self.initial += n
                self.last_print_n = self.n
                self.refresh()

        return Bar(total=total, unit="img", file=stream)
    return PlainProgress(total, stream=stream, every_s=every_s, step_percent=step_percent, disable=disable)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class PlainProgress:
    """Progress as whole lines: `netscope explain: grad_cam 12/50 images (24%), 0.81 img/s, about 47 s left`."""

    def __init__(self, total: int, *, stream: TextIO, every_s: float, step_percent: float, disable: bool = False):
        self.total, self.stream, self.every_s, self.step = total, stream, every_s, step_percent
        self.disable = disable
        self.n = 0
        self.description = ""
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._done_here = 0  # images this run finished (the rate), not the skipped ones
        self._skipped = 0
        self._last_line = 0.0
        self._next_percent = 0.0
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True, name="progress-lines")

    def __enter__(self) -> "PlainProgress":
        if not self.disable:
            self._ticker.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self.n and not self.disable:
            self._line(final=True)

    def set_description(self, text: str) -> None:
        self.description = text
        if not self.disable:
            self._line()  # a method starts

    def write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def skipped(self, n: int) -> None:
        """n images the index already holds: counted as done, not in the rate."""
        with self._lock:
            self._skipped += n
            self.n += n
            self._next_percent = (100.0 * self.n / max(self.total, 1) // self.step + 1) * self.step
        if not self.disable:
            self._line()

    def update(self, n: int = 1, *, counted: bool = True) -> None:
        with self._lock:
            self.n += n
            if counted:
                self._done_here += n
            percent = 100.0 * self.n / max(self.total, 1)
            due = percent >= self._next_percent
            if due:
                self._next_percent = (percent // self.step + 1) * self.step
        if due and not self.disable:
            self._line()

    def _tick(self) -> None:
        self._last_line = time.monotonic()
        while not self._stop.wait(min(1.0, self.every_s)):
            if time.monotonic() - self._last_line >= self.every_s:
                self._line()

    def _line(self, final: bool = False) -> None:
        with self._lock:
            elapsed = time.monotonic() - self._started
            n, total, done = self.n, self.total, self._done_here
            self._last_line = time.monotonic()
        what = f"{self.description} " if self.description else ""
        text = f"netscope explain: {what}{n}/{total} images ({100.0 * n / max(total, 1):.0f}%)"
        if self._skipped:
            text += f", {self._skipped} already done"
        if done and elapsed > 0:
            rate = done / elapsed
            text += f", {rate:.3g} img/s"
            if not final and n < total:
                text += f", about {_duration((total - n) / rate)} left"
        elif not final:
            text += f", waiting for the first answer ({_duration(elapsed)})"
        if final:
            text += f", took {_duration(elapsed)}"
        self.write(text)
