"""Processes of the local cluster: each started in its own session, with a log and a PID file, and stopped by that
PID (never by name). Stdlib only.

A PID file holds ``PID START_TIME`` (the kernel's start time of the process), so a PID the kernel gave to another
process since is not taken for ours.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


class ClusterError(RuntimeError):
    """Something the cluster needs failed; the message says what and where to look."""


def say(message: str) -> None:
    sys.stderr.write(f"cluster: {message}\n")
    sys.stderr.flush()


def run(*argv: str | Path, stdin: str | None = None, check: bool = True) -> str:
    """Run a command to completion; its stdout, or ClusterError with its stderr when it fails and ``check``."""
    result = subprocess.run([str(a) for a in argv], input=stdin, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise ClusterError(f"{' '.join(map(str, argv))} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def start_time(pid: int) -> str | None:
    """The kernel's start time of a live process (field 22 of /proc/PID/stat), None when gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in "ZX" else fields[19]


def reap(pid: int) -> None:
    """Collect a child of this process that exited (a zombie otherwise looks alive to kill -0)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


@dataclass(frozen=True)
class Procs:
    state: Path

    def pid_file(self, name: str) -> Path:
        return self.state / "pids" / name

    def log(self, name: str) -> Path:
        return self.state / "logs" / f"{name}.log"

    def pid(self, name: str) -> int | None:
        """The PID of our process ``name`` while it runs."""
        try:
            pid, started = self.pid_file(name).read_text().split()
        except (OSError, ValueError):
            return None
        return int(pid) if start_time(int(pid)) == started else None

    def alive(self, name: str) -> bool:
        return self.pid(name) is not None

    def names(self) -> list[str]:
        folder = self.state / "pids"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def start(
        self,
        name: str,
        argv: Sequence[str | Path],
        *,
        mount_ns: Path | None = None,
        cgroup: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> int:
        """Start ``argv`` in its own session (inside a mount namespace and a cgroup when given), logging to
        logs/NAME.log; the PID stays the program's own (``sh`` and ``nsenter`` exec it)."""
        command = [str(a) for a in argv]
        if mount_ns is not None:
            command = ["nsenter", f"--mount={mount_ns}", "--", *command]
        if cgroup is not None:  # join the cgroup first, so everything the program starts is in it too
            command = ["sh", "-c", 'echo $$ >"$0/cgroup.procs" && exec "$@"', str(cgroup), *command]
        with self.log(name).open("ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
                umask=0o022,  # the credentials are written with 077; what the servers make (images) is not secret
            )
        started = start_time(process.pid)
        if started is None:
            raise ClusterError(f"{name} exited at once; {self.log(name)} ends:\n{self.tail(name)}")
        self.pid_file(name).write_text(f"{process.pid} {started}\n")
        return process.pid

    def stop(self, name: str, grace: float = 15) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; forget the PID file either way."""
        pid = self.pid(name)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and (reap(pid), start_time(pid))[1] is not None:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            reap(pid)
            say(f"stopped {name} ({pid})")
        self.pid_file(name).unlink(missing_ok=True)

    def kill(self, name: str) -> None:
        """SIGKILL, at once (a node dying); the PID file stays until the process is gone."""
        pid = self.pid(name)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            reap(pid)

    def tail(self, name: str, lines: int = 20) -> str:
        try:
            return "\n".join(self.log(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_until(self, seconds: float, what: str, check: Callable[[], object], process: str | None = None) -> None:
        """Poll ``check`` every half second until it returns true; fail early when ``process`` died."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(ClusterError, OSError, subprocess.SubprocessError):
                if check():
                    return
            if process is not None and not self.alive(process):
                raise ClusterError(f"{process} exited; {self.log(process)} ends:\n{self.tail(process)}")
            time.sleep(0.5)
        raise ClusterError(f"timed out after {seconds:.0f}s waiting for {what}")


def kill_cgroup(cgroup_dir: Path, seconds: float = 15) -> int:
    """SIGKILL every process in a cgroup and the cgroups under it until none is left; how many were killed."""
    killed: set[int] = set()
    deadline = time.monotonic() + seconds
    while True:
        pids = set()
        for procs in cgroup_dir.rglob("cgroup.procs") if cgroup_dir.is_dir() else ():
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
        if not pids:
            return len(killed)
        if time.monotonic() > deadline:
            raise ClusterError(f"processes still in {cgroup_dir} after {seconds:.0f}s: {sorted(pids)}")
        for pid in pids - {os.getpid()}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            reap(pid)
        killed |= pids
        time.sleep(0.05)
