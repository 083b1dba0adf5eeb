"""A stand-in for a Prometheus behind a slow network: forwards each query after a delay."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LatencyProxy:
    """Forward every GET to ``upstream`` after ``delay_s`` seconds, on a loopback port.

    Attributes:
        url: The proxy's base URL (``http://127.0.0.1:PORT``).
        paths: The path (with query string) of each request, in arrival order.
    """

    def __init__(self, upstream: str, delay_s: float) -> None:
        """Start serving in a daemon thread."""
        self.paths: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy.paths.append(self.path)
                time.sleep(delay_s)
                try:
                    with urllib.request.urlopen(upstream + self.path, timeout=10) as answer:  # noqa: S310 - loopback
                        status, body = answer.status, answer.read()
                except urllib.error.HTTPError as e:
                    with e:
                        status, body = e.code, e.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        host, port = self.server.server_address[:2]
        self.url = f"http://{host}:{port}"

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
