"""The lake: a local folder or an S3 prefix, with atomic writes and partitions keyed by date."""

from __future__ import annotations

import io
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

ZONES = ("landing", "raw", "quarantine", "features", "predictions", "inference_log", "reports")


class StorageError(RuntimeError):
    """A lake operation failed; the message names the URI."""


def partition_name(ds: str) -> str:
    """Folder name of the partition of one logical date (YYYY-MM-DD)."""
    return f"date={ds}"


class Lake:
    """Base of the two lake backends; every method takes and returns absolute URIs."""

    root: str

    def uri(self, *parts: str) -> str:
        """URI of a path below the lake root."""
        tail = "/".join(p.strip("/") for p in parts if p)
        return f"{self.root.rstrip('/')}/{tail}" if tail else self.root

    def zone_uri(self, zone: str, pipeline: str, *parts: str) -> str:
        """URI inside a zone of one pipeline, e.g. raw/flight_delays/flights/date=.../x."""
        if zone not in ZONES:
            raise StorageError(f"unknown lake zone {zone!r}; zones are {', '.join(ZONES)}")
        return self.uri(zone, pipeline, *parts)

    def partition_uri(self, zone: str, pipeline: str, dataset: str, ds: str, filename: str = "") -> str:
        """URI of a date partition (or a file in it) of one dataset."""
        return self.zone_uri(zone, pipeline, dataset, partition_name(ds), filename)

    # Backend primitives -------------------------------------------------------------------
    def read_bytes(self, uri: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write a whole object; readers see the old content or the new one, never a part."""
        raise NotImplementedError

    def exists(self, uri: str) -> bool:
        raise NotImplementedError

    def list(self, prefix_uri: str) -> list[str]:
        """URIs of all files below a prefix, sorted; temporary files are not listed."""
        raise NotImplementedError

    def delete(self, uri: str) -> None:
        """Delete a file or everything below a prefix; deleting nothing is not an error."""
        raise NotImplementedError

    # Helpers built on the primitives -------------------------------------------------------
    def copy(self, src_uri: str, dst_uri: str) -> None:
        self.write_bytes(dst_uri, self.read_bytes(src_uri))

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode("utf-8"))

    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode("utf-8")

    def write_parquet(self, uri: str, df: pd.DataFrame) -> None:
        """Write a DataFrame as one Parquet file, atomically."""
        buf = io.BytesIO()
        df.to_parquet(buf, index=False, engine="pyarrow")
        self.write_bytes(uri, buf.getvalue())

    def read_parquet(self, uri: str, columns: list[str] | None = None) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.read_bytes(uri)), columns=columns, engine="pyarrow")

    def replace_partition(self, partition_uri: str, files: dict[str, bytes]) -> list[str]:
        """Make a partition hold exactly `files`: write them, then drop files not among them.

        Each file is written atomically, so a rerun replaces a partition and never duplicates it.
        """
        wanted = {f"{partition_uri.rstrip('/')}/{name}": data for name, data in files.items()}
        for uri, data in wanted.items():
            self.write_bytes(uri, data)
        for uri in self.list(partition_uri):
            if uri not in wanted:
                self.delete(uri)
        return sorted(wanted)

    def partitions(self, zone: str, pipeline: str, dataset: str) -> list[str]:
        """Logical dates (YYYY-MM-DD) that have a partition in a zone, sorted."""
        prefix = self.zone_uri(zone, pipeline, dataset)
        found = set()
        for uri in self.list(prefix):
            rel = uri[len(prefix) :].lstrip("/")
            head = rel.split("/", 1)[0]
            if head.startswith("date="):
                found.add(head[len("date=") :])
        return sorted(found)


@dataclass
class LocalLake(Lake):
    """A lake in a local folder."""

    root: str

    def __post_init__(self) -> None:
        self.root = str(Path(self.root).expanduser().resolve())

    def read_bytes(self, uri: str) -> bytes:
        try:
            return Path(uri).read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read {uri}: {exc.strerror or exc}") from exc

    def write_bytes(self, uri: str, data: bytes) -> None:
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Temporary name in the same folder, then an atomic rename: no reader sees half a file.
        tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot write {uri}: {exc.strerror or exc}") from exc

    def exists(self, uri: str) -> bool:
        return Path(uri).is_file()

    def list(self, prefix_uri: str) -> list[str]:
        base = Path(prefix_uri)
        if base.is_file():
            return [str(base)]
        if not base.is_dir():
            return []
        return sorted(str(p) for p in _walk_files(base))

    def delete(self, uri: str) -> None:
        path = Path(uri)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _walk_files(base: Path) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(base):
        for name in files:
            if not name.startswith(".tmp-"):
                yield Path(dirpath) / name


@dataclass
class S3Lake(Lake):
    """A lake under s3://bucket/prefix on any S3-compatible endpoint."""

    root: str
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    _client: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.root.startswith("s3://") or len(self.root) <= len("s3://"):
            raise StorageError(f"S3 lake root must look like s3://bucket/prefix, got {self.root!r}")
        self.root = self.root.rstrip("/")

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.session.Session().client("s3", **self.client_kwargs)
        return self._client

    @staticmethod
    def split(uri: str) -> tuple[str, str]:
        """Bucket and key of an s3:// URI."""
        bucket, _, key = uri[len("s3://") :].partition("/")
        return bucket, key

    def read_bytes(self, uri: str) -> bytes:
        bucket, key = self.split(uri)
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]
        except Exception as exc:  # botocore raises per-service classes; name the URI in every case
            raise StorageError(f"cannot read {uri}: {exc}") from exc

    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = self.split(uri)
        try:
            # A PUT replaces the object whole: S3 readers never see a partial object.
            self.client.put_object(Bucket=bucket, Key=key, Body=data)
        except Exception as exc:
            raise StorageError(f"cannot write {uri}: {exc}") from exc

    def exists(self, uri: str) -> bool:
        bucket, key = self.split(uri)
        resp = self.client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        return any(obj["Key"] == key for obj in resp.get("Contents", []))

    def list(self, prefix_uri: str) -> list[str]:
        bucket, key = self.split(prefix_uri)
        uris: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            for obj in page.get("Contents", []):
                k = obj["Key"]
                # Prefix "a/b" also matches "a/bc": keep only the object itself and its children.
                if k == key or k.startswith(key.rstrip("/") + "/"):
                    uris.append(f"s3://{bucket}/{k}")
        return sorted(set(uris))

    def delete(self, uri: str) -> None:
        bucket, _ = self.split(uri)
        keys = [self.split(u)[1] for u in self.list(uri)]
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            self.client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk]})


def open_lake(root: str, s3_client_kwargs: dict[str, Any] | None = None) -> Lake:
    """The lake at `root`: s3://bucket/prefix or a local folder."""
    if root.startswith("s3://"):
        return S3Lake(root, dict(s3_client_kwargs or {}))
    if "://" in root and not root.startswith("file://"):
        raise StorageError(f"unsupported lake root {root!r}: use a local folder or s3://bucket/prefix")
    return LocalLake(root.removeprefix("file://"))
