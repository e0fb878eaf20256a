"""A stand-in for a trainer pod's Prometheus endpoint: serves the exposition text a test sets, on 127.0.0.1, so the
operator's progress scraping runs over real HTTP. :meth:`TrainerMetricsServer.show` writes samples as the trainer
does, labelled with the trainer's own label names (``tests/contract`` checks they are the trainer's)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: the labels of every prefops_trainer_* gauge (prefops_trainer.adapters.metrics.LABELS)
LABELS = ("job_name", "job_namespace", "phase")


class TrainerMetricsServer:
    def __init__(self) -> None:
        self.text = ""
        self.scrapes = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.scrapes += 1
                body = server.text.encode()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def show(self, job: str, namespace: str, phase: str, **values: float) -> None:
        """Serve ``prefops_trainer_<name> <value>`` for each of ``values``, labelled as the trainer labels them."""
        labels = ",".join(f'{k}="{v}"' for k, v in zip(LABELS, (job, namespace, phase), strict=True))
        self.text = "".join(f"prefops_trainer_{name}{{{labels}}} {value}\n" for name, value in values.items())

    def __enter__(self) -> TrainerMetricsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
