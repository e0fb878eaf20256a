"""SIGTERM, the way Kubernetes ends a pod (preemption, a drain, ``kubectl delete pod``), turned into a clean stop with
exit code 75, "interrupted, resume me" (:class:`~prefops_trainer.core.errors.Interrupted`).

- A phase's process raises :class:`Interrupted` as soon as the signal arrives (:func:`install`): what precompute and
  export write is atomic per object and skipped when already there, so a restart goes on where this one stopped.
- While the ranks train (:func:`deferred`), the signal is only noted: at the next step boundary the ranks agree that
  one of them got it, save a checkpoint together and stop (``phases.train.callbacks.StopOnSignal``).
- The launcher, torchrun's parent and the pod's first process, passes the signal on to torchrun (:func:`forwarding`),
  which passes it to its ranks and waits for them as long as ``PREFOPS_TERMINATION_GRACE_SECONDS`` allows.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

from ..core.errors import Interrupted

log = logging.getLogger(__name__)


@dataclass
class _State:
    requested: bool = False
    deferred: int = 0


_state = _State()


def install() -> None:
    """Handle SIGTERM in this process (the main thread): raise :class:`Interrupted`, or note it while deferred."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def requested() -> bool:
    """Whether this process got SIGTERM."""
    return _state.requested


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    first = not _state.requested
    _state.requested = True
    if not _state.deferred:
        raise Interrupted("stopped on SIGTERM (the pod was deleted, preempted or drained); run it again to resume")
    if first:
        log.warning("SIGTERM: the ranks stop at the next step boundary, after saving a checkpoint")


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block SIGTERM is only noted (:func:`requested`); the code inside checks it where it can stop."""
    _state.deferred += 1
    try:
        yield
    finally:
        _state.deferred -= 1


@dataclass
class Child:
    """The process SIGTERM is passed on to, once it is started."""

    process: subprocess.Popen[bytes] | None = None

    def started(self, process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        """Remember ``process``; pass it a SIGTERM that came before it existed."""
        self.process = process
        if _state.requested:
            self.terminate()
        return process

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)


@contextlib.contextmanager
def forwarding() -> Iterator[Child]:
    """Within the block, SIGTERM is noted and passed on to the :class:`Child` (once started) instead of raised."""

    def forward(signum: int, frame: FrameType | None) -> None:
        if not _state.requested:
            log.warning("SIGTERM: passed on to the ranks, which stop at the next step boundary after a checkpoint")
        _state.requested = True
        child.terminate()

    child = Child()
    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield child
    finally:
        signal.signal(signal.SIGTERM, previous)
