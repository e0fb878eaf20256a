"""Progress for long work: a tqdm bar in a terminal, plain log lines (every 10% or 30 s) otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

log = logging.getLogger("prefops_trainer")


def is_tty() -> bool:
    return sys.stderr.isatty()


class Progress:
    def __init__(self, total: int, desc: str, on_update: Callable[[int], None] = lambda done: None) -> None:
        self.total, self.desc, self.done, self.on_update = total, desc, 0, on_update
        self.start = self.last_log = time.monotonic()
        self.next_fraction = 0.1
        self.bar = None
        if is_tty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="pair", dynamic_ncols=True)

    def update(self, n: int) -> None:
        self.done += n
        self.on_update(self.done)
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if self.done >= self.total * self.next_fraction or now - self.last_log >= 30 or self.done == self.total:
            rate = self.done / max(now - self.start, 1e-9)
            log.info("%s: %d/%d (%.0f%%, %.1f/s)", self.desc, self.done, self.total, 100 * self.done / self.total, rate)
            self.last_log = now
            while self.next_fraction <= self.done / self.total:
                self.next_fraction += 0.1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
