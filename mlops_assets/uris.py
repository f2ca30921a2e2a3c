"""Location helpers that work for local paths and object-store URIs alike (via pyarrow.fs)."""

from __future__ import annotations

import pyarrow.fs as pafs


def join_uri(root: str, *parts: str) -> str:
    """Join path parts onto a root that may be a local path or a ``scheme://`` URI."""
    joined = root.rstrip("/")
    for part in parts:
        joined = f"{joined}/{part.strip('/')}"
    return joined


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for ``uri`` and the path inside it."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), uri
    return pafs.FileSystem.from_uri(uri)


def write_text(uri: str, text: str) -> None:
    """Write a text file at ``uri`` (parents created), replacing any previous content."""
    fs, path = filesystem(uri)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(text.encode("utf-8"))


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read()
