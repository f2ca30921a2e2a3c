"""The Avro schemas of the streaming path, kept in the repository (``schemas/*.avsc``).

``transaction.v<N>.avsc`` is what producers send to the transactions topic, ``decision.v<N>``
what the streaming scorer sends to the decisions topic. The newest version of each is the one
this code writes; a registry (``codec.py``) holds every version producers have registered, and
decides whether a new one is compatible with them.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).parent / "schemas"
_FILE = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<version>\d+)\.avsc$")


@cache
def schema_versions(name: str) -> dict[int, dict[str, Any]]:
    """Every version of the schema ``name`` in the repository, by version number."""
    found: dict[int, dict[str, Any]] = {}
    for path in SCHEMA_DIR.glob(f"{name}.v*.avsc"):
        match = _FILE.match(path.name)
        if match and match.group("name") == name:
            found[int(match.group("version"))] = json.loads(path.read_text())
    if not found:
        raise FileNotFoundError(f"no Avro schema {name}.v<N>.avsc in {SCHEMA_DIR}")
    return found


def latest_schema(name: str) -> tuple[int, dict[str, Any]]:
    """(version, schema) of the newest version of ``name`` in the repository."""
    versions = schema_versions(name)
    newest = max(versions)
    return newest, copy.deepcopy(versions[newest])


def transaction_schema() -> dict[str, Any]:
    return latest_schema("transaction")[1]


def decision_schema() -> dict[str, Any]:
    return latest_schema("decision")[1]


def field_names(schema: dict[str, Any]) -> list[str]:
    return [f["name"] for f in schema["fields"]]


def required_fields(schema: dict[str, Any]) -> list[str]:
    """Fields without a default: every writer schema must have them for the reader to work."""
    return [f["name"] for f in schema["fields"] if "default" not in f]


def without_logical_types(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with logical types removed: timestamps decode as their plain ``long``
    (microseconds), which Arrow takes in one call instead of a ``datetime`` per value."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            if "logicalType" in node and node.get("type") in ("long", "int"):
                return node["type"]
            return {key: strip(value) for key, value in node.items()}
        if isinstance(node, list):
            return [strip(item) for item in node]
        return node

    return strip(copy.deepcopy(schema))
