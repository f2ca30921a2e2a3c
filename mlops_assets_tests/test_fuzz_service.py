"""Hostile bodies at the model service's door: random JSON (wrong types, huge numbers, NaN and
Infinity, deep nesting, unicode) in place of a transaction or a batch, and mutations of a real
transaction. Every answer is a clear 2xx or 4xx, never a 500, and the service keeps serving."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_assets_tests.serve_world import World

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(
        ["NaN", "Infinity", "-1e309", "\u202e\u0000", "PAYMENT", "2026-01-05T00:00:00Z"]
    ),
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=25,
)
FIELDS = ["step", "type", "amount", "nameOrig", "oldbalanceOrg", "newbalanceOrig", "nameDest",
          "oldbalanceDest", "newbalanceDest", "timestamp", "transaction_id"]  # fmt: skip
ALLOWED = {200, 413, 422}


def _encode(value: Any) -> bytes:
    # Python's json writes NaN and Infinity, as a careless client would
    return json.dumps(value, allow_nan=True).encode()


def test_random_and_hostile_bodies_get_clear_answers(world: World) -> None:
    base = world.requests[0]
    with TestClient(world.app(refresh_seconds=0, max_body_bytes=200_000)) as client:

        @settings(
            max_examples=120,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        @given(
            body=JSON,
            field=st.sampled_from(FIELDS),
            replacement=JSON,
            batch=st.booleans(),
        )
        def check(body: Any, field: str, replacement: Any, batch: bool) -> None:
            mutated = {**base, field: replacement}
            for payload in (body, mutated):
                path = "/predict/batch" if batch else "/predict"
                content = _encode({"transactions": [payload]} if batch else payload)
                response = client.post(path, content=content)
                assert response.status_code in ALLOWED, (path, content[:300], response.text)
                if response.status_code == 200:
                    answer = response.json()
                    scores = [p["fraud_score"] for p in answer.get("predictions", [answer])]
                    assert all(math.isfinite(s) and 0 <= s <= 1 for s in scores)

        check()
        nested = b"[" * 100_000 + b"]" * 100_000
        assert client.post("/predict", content=nested).status_code in {413, 422}
        assert client.post("/predict", json=base).status_code == 200  # still serving
        assert 'status="500"' not in client.get("/metrics").text
