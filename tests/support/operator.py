"""Run the real operator (``python -m prefops_operator``) as a subprocess against a test cluster, as a given
kubeconfig's identity. Killable at any moment (``kill()`` is SIGKILL) to test restarts."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .kube import CACHE, ROOT, free_port, stop_process, tail, wait_for


def image_like_python() -> str:
    """The python of a venv holding only the operator's dependencies, installed as its image installs them
    (``pip install -c constraints.txt operator``): no test-only packages such as the ``kubernetes`` client, which
    kopf imports whenever it is installed. Cached under ~/.cache/prefops (the first build takes seconds)."""
    stamp = hashlib.sha256(  # the checkout's path too: the venv holds an editable install of this checkout
        (ROOT / "constraints.txt").read_bytes() + (ROOT / "operator" / "pyproject.toml").read_bytes() + bytes(ROOT)
    )
    venv = CACHE / f"operator-venv-{stamp.hexdigest()[:12]}"
    python = venv / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{venv.name}.lock", "w") as lock:  # pytest-xdist workers build it once, one at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)  # a build cut short
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            subprocess.run([*pip, "-c", str(ROOT / "constraints.txt"), "-e", str(ROOT / "operator")], check=True)
            (venv / ".complete").touch()
    return str(python)


@dataclass
class OperatorProcess:
    kubeconfig: Path
    log: Path
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    extra_args: tuple[str, ...] = ()
    python: str = sys.executable  # e.g. a venv with only the operator's dependencies, as in its image
    env: dict[str, str] = field(default_factory=dict)  # more environment, e.g. TMPDIR
    metrics_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        argv = [
            self.python,
            "-m",
            "prefops_operator",
            "--bind-address",
            "127.0.0.1",
            "--metrics-port",
            str(self.metrics_port),
            "--health-port",
            str(self.health_port),
            *[a for ns in self.namespaces for a in ("--namespace", ns)],
            *self.extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "PREFOPS_OPERATOR_"))}
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PREFOPS_OPERATOR_HUB_ENDPOINT"] = ""  # no Hub is reachable here: a test that wants one serves it
        env.update(self.env)
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_for(self._healthy, 60, f"operator health endpoint (log: {self.log})")
        return self

    def _healthy(self) -> bool:
        assert self.popen is not None
        if self.popen.poll() is not None:
            raise RuntimeError(f"operator exited with {self.popen.returncode}:\n{self.tail()}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1) as resp:
            return resp.status == 200

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def kill(self) -> None:
        """SIGKILL: no cleanup, like a crashed or evicted operator pod."""
        if self.popen and self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def stop(self, timeout: float = 15) -> None:
        if self.popen:
            stop_process(self.popen, timeout)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def tail(self, lines: int = 60) -> str:
        return tail(self.log, lines)

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
