"""The landing zone resource: where raw transaction files are delivered (never modified)."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
from pydantic import Field

from mlops_assets.uris import filesystem, join_uri

SUPPORTED_SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class LandingFile:
    """One delivered file: its URI, base name, size and modification time."""

    uri: str
    name: str
    size: int
    mtime_ns: int


class LandingZone(dg.ConfigurableResource):
    """A directory (local path or object-store prefix) that receives transaction files.

    Only ``.csv`` and ``.parquet`` files count; hidden files (``.name``) and partial uploads
    (``*.tmp``, ``*.part``) are ignored. The platform only reads from here.
    """

    uri: str
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="Object-store options of an s3:// landing zone, with the keys the Delta "
        "lake takes (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, ...); empty: the standard "
        "AWS environment.",
    )

    def list_files(self) -> list[LandingFile]:
        import pyarrow.fs as pafs

        fs, root = filesystem(self.uri, self.storage_options)
        selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
        files: list[LandingFile] = []
        for info in fs.get_file_info(selector):
            if info.type != pafs.FileType.File:
                continue
            if info.base_name.startswith(".") or not info.base_name.lower().endswith(
                SUPPORTED_SUFFIXES
            ):
                continue
            relative = info.path[len(root.rstrip("/")) + 1 :]
            files.append(
                LandingFile(
                    uri=join_uri(self.uri, relative),
                    name=info.base_name,
                    size=info.size or 0,
                    mtime_ns=info.mtime_ns or 0,
                )
            )
        return sorted(files, key=lambda f: f.uri)

    def read_bytes(self, file: LandingFile) -> bytes:
        fs, path = filesystem(file.uri, self.storage_options)
        with fs.open_input_stream(path) as stream:
            return stream.read()
