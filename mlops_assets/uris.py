"""Location helpers that work for local paths and object-store URIs alike (via pyarrow.fs).

Object-store credentials and endpoints come either from ``storage_options`` (the same keys as
delta-rs / object_store take: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``, ``AWS_ALLOW_HTTP``; upper or
lower case), so one setting serves the Delta lake and the landing zone, or, when none are
given, from the standard AWS environment and config files (pyarrow reads ``AWS_ENDPOINT_URL``
too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow.fs as pafs


_S3_OPTIONS = {
    "aws_endpoint_url": "endpoint_override",
    "aws_endpoint": "endpoint_override",
    "endpoint_url": "endpoint_override",
    "endpoint": "endpoint_override",
    "aws_access_key_id": "access_key",
    "access_key_id": "access_key",
    "aws_secret_access_key": "secret_key",
    "secret_access_key": "secret_key",
    "aws_session_token": "session_token",
    "session_token": "session_token",
    "aws_region": "region",
    "aws_default_region": "region",
    "region": "region",
}
_TRUE = {"true", "1", "yes"}


def join_uri(root: str, *parts: str) -> str:
    """Join path parts onto a root that may be a local path or a ``scheme://`` URI."""
    joined = root.rstrip("/")
    for part in parts:
        joined = f"{joined}/{part.strip('/')}"
    return joined


def s3_filesystem(storage_options: Mapping[str, str]) -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem from delta-rs-style storage options (see the module docstring).

    Options it does not know (e.g. ``AWS_S3_ALLOW_UNSAFE_RENAME``, delta-rs only) are ignored;
    an endpoint without a scheme is reached over ``http`` when ``AWS_ALLOW_HTTP`` is true.
    """
    import pyarrow.fs as pafs

    kwargs: dict[str, str] = {}
    allow_http = False
    for key, value in storage_options.items():
        name = key.lower()
        if name in {"aws_allow_http", "allow_http"}:
            allow_http = str(value).lower() in _TRUE
        elif name in _S3_OPTIONS:
            kwargs.setdefault(_S3_OPTIONS[name], value)
    endpoint = kwargs.get("endpoint_override", "")
    if endpoint and "://" not in endpoint:
        kwargs["scheme"] = "http" if allow_http else "https"
    return pafs.S3FileSystem(**kwargs)


def filesystem(
    uri: str, storage_options: Mapping[str, str] | None = None
) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for ``uri`` and the path inside it.

    ``storage_options`` configure ``s3://`` (and ``s3a://``) URIs; without them the filesystem
    is resolved from the URI and the environment.
    """
    import pyarrow.fs as pafs

    if "://" not in uri:
        return pafs.LocalFileSystem(), uri
    scheme, _, path = uri.partition("://")
    if storage_options and scheme.lower() in {"s3", "s3a"}:
        return s3_filesystem(storage_options), path.rstrip("/")
    return pafs.FileSystem.from_uri(uri)


def write_text(uri: str, text: str, storage_options: Mapping[str, str] | None = None) -> None:
    """Write a text file at ``uri`` (parents created), replacing any previous content."""
    fs, path = filesystem(uri, storage_options)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(text.encode("utf-8"))


def read_bytes(uri: str, storage_options: Mapping[str, str] | None = None) -> bytes:
    fs, path = filesystem(uri, storage_options)
    with fs.open_input_stream(path) as stream:
        return stream.read()
