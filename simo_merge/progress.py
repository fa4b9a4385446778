"""The one way a loop shows its progress: a tqdm bar on a terminal, plain lines everywhere else.

A bar redrawn in place is useless in a captured stream (a script's log, CI, a cluster job): it shows
nothing, or one line per redraw. When stderr is not a terminal, :func:`progress_bar` prints one plain line
every ``every_s`` seconds (and at the end): ``desc: step/total (pct) | loss=... | 1.23 s/step | ETA 4m05s``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

#: seconds between two plain progress lines when stderr is not a terminal
PLAIN_EVERY_S = 30.0


def _duration(seconds: float) -> str:
    """``"45s"``, ``"4m05s"`` or ``"1h02m"``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class PlainProgress:
    """tqdm's interface (iterate, ``update``, ``set_postfix(_str)``, ``close``) printing plain lines to
    stderr: the first step, then at most one line per ``every_s`` seconds, and the last step."""

    def __init__(
        self, iterable: Iterable | None, total: int | None, desc: str, every_s: float = PLAIN_EVERY_S
    ) -> None:
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.every_s = desc, every_s
        self.n = 0
        self.postfix = ""
        self.start = time.perf_counter()
        self.last: float | None = None

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = " | ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if self.last is None or now - self.last >= self.every_s or self.n == self.total:
            self.line(now)

    def line(self, now: float) -> None:
        """Print where the loop is: step/total, its last postfix, seconds per step and the ETA."""
        self.last = now
        per_step = (now - self.start) / max(self.n, 1)
        parts = [f"{self.desc}: {self.n}/{self.total}" if self.total else f"{self.desc}: {self.n}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        if self.postfix:
            parts.append(self.postfix)
        parts.append(f"{per_step:.3g} s/step")
        if self.total:
            parts.append(f"ETA {_duration(per_step * (self.total - self.n))}")
        print(" | ".join(parts), file=sys.stderr, flush=True)

    def close(self) -> None:
        """Nothing to tidy: every line is already printed."""


class _Silent:
    """A disabled bar: iterates, and ignores updates."""

    def __init__(self, iterable: Iterable | None) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(self.iterable)

    def update(self, n: int = 1) -> None: ...

    def set_postfix(self, **values: Any) -> None: ...

    def set_postfix_str(self, text: str) -> None: ...

    def close(self) -> None: ...


def progress_bar(
    iterable: Iterable | None = None,
    desc: str = "",
    *,
    total: int | None = None,
    show: bool = True,
    every_s: float = PLAIN_EVERY_S,
) -> Any:
    """Progress over ``iterable`` (or ``total`` manual ``update()`` steps): nothing unless ``show``; a
    transient tqdm bar when stderr is a terminal; otherwise plain lines (:class:`PlainProgress`)."""
    if not show:
        return _Silent(iterable)
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)
    return PlainProgress(iterable, total, desc, every_s)
