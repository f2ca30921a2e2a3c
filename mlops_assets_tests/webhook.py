"""A local webhook receiver for alert tests (fixtures ``receiver`` and ``down_url``)."""

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

SECRET_PATH = "/services/T000/B000/s3cr3tT0ken"


@dataclass
class Receiver:
    """A local webhook receiver: records every request's JSON body; answers with the scripted
    statuses first (then 200 ``ok``), optionally after a delay."""

    url: str
    script: list[int] = field(default_factory=list)
    retry_after: str | None = None
    delay_seconds: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    delivered: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length).decode("utf-8"))
            with state.lock:
                state.requests.append({"path": self.path, "body": body})
                status = state.script.pop(0) if state.script else 200
                if status == 200:
                    state.delivered.append(body)
            if state.delay_seconds:
                time.sleep(state.delay_seconds)
            answer = b"ok" if status == 200 else b"server_error"
            self.send_response(status)
            if status == 429 and state.retry_after is not None:
                self.send_header("Retry-After", state.retry_after)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}{SECRET_PATH}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def down_url() -> str:
    """A webhook URL on a local port where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}{SECRET_PATH}"
