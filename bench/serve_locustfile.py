"""Locust users for ``bench/serve_bench.py``: each sends one request a second on average, as
a Poisson process on its own clock, so the number of users is the offered rate (requests/s)
whatever the latency (an open loop, as long as a user's answer comes before its next send).

Reads ``SERVE_BENCH_REQUESTS`` (a JSON list of request bodies), ``SERVE_BENCH_BATCH`` (0: single
``/predict``; n: ``/predict/batch`` of n), ``SERVE_BENCH_QUERY`` (a query string for every
request, e.g. ``explain=true``; empty: none) and writes every request's exact latency and status
to ``SERVE_BENCH_OUT`` (JSON) when the run ends.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from locust import FastHttpUser, events, task

_REQUESTS: list[dict[str, Any]] = json.loads(Path(os.environ["SERVE_BENCH_REQUESTS"]).read_text())
_BATCH = int(os.environ.get("SERVE_BENCH_BATCH", "0"))
_OUT = os.environ["SERVE_BENCH_OUT"]
_QUERY = f"?{os.environ['SERVE_BENCH_QUERY']}" if os.environ.get("SERVE_BENCH_QUERY") else ""
_LOCK = threading.Lock()
_NEXT = itertools.count()
_JSON = {"Content-Type": "application/json"}
if os.environ.get("SERVE_BENCH_KEY"):  # the service authenticates its callers
    _JSON["Authorization"] = f"Bearer {os.environ['SERVE_BENCH_KEY']}"
_RESULTS: list[tuple[float, int, float]] = []  # (start time, status, latency ms)


def _take(n: int) -> list[dict[str, Any]]:
    with _LOCK:
        start = next(_NEXT) * n
    return [_REQUESTS[(start + i) % len(_REQUESTS)] for i in range(n)]


@events.request.add_listener
def _record(
    request_type: str,
    name: str,
    response_time: float,
    response_length: int,
    response: Any = None,
    exception: Any = None,
    start_time: float = 0.0,
    **_: Any,
) -> None:
    status = getattr(response, "status_code", 0) if exception is None else 0
    _RESULTS.append((start_time, int(status or 0), float(response_time)))


@events.quitting.add_listener
def _dump(environment: Any, **_: Any) -> None:
    with open(_OUT, "w") as out:
        json.dump(_RESULTS, out)


class ServiceUser(FastHttpUser):
    """A client that sends on average one request a second as a Poisson process, on its own
    schedule (not after the previous answer): together, N users offer N requests/s arriving
    as independent clients' requests do. (Locust's ``constant_throughput`` users fall into
    step and arrive in bursts.)"""

    def on_start(self) -> None:
        self._next = time.monotonic() + random.random()

    def wait_time(self) -> float:
        self._next += random.expovariate(1.0)
        return max(0.0, self._next - time.monotonic())

    @task
    def predict(self) -> None:
        # bytes, so that headers and body leave in one write (a body sent after the headers
        # waits for the server's delayed ACK under Nagle: about 40 ms of client artefact)
        if _BATCH:
            body = json.dumps({"transactions": _take(_BATCH)}).encode()
            self.client.post(f"/predict/batch{_QUERY}", data=body, headers=_JSON, name="batch")
        else:
            body = json.dumps(_take(1)[0]).encode()
            self.client.post(f"/predict{_QUERY}", data=body, headers=_JSON, name="single")
