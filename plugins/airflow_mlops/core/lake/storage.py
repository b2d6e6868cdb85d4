"""The lake: a local folder or an S3 prefix, with atomic writes and partitions keyed by date."""

from __future__ import annotations

import builtins
import glob
import io
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

ZONES = ("landing", "raw", "quarantine", "features", "labels", "predictions", "inference_log", "reports")
TMP_PREFIX = ".tmp-"
"""Name prefix of a local file being written; such files are never listed."""

_DS_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")


class StorageError(RuntimeError):
    """A lake operation failed; the message names the URI."""


def partition_name(ds: str) -> str:
    """Folder name of the partition of one logical date (YYYY-MM-DD)."""
    if not isinstance(ds, str) or not _DS_PATTERN.fullmatch(ds):
        raise StorageError(f"partition date must be YYYY-MM-DD, got {ds!r}")
    try:
        date.fromisoformat(ds)
    except ValueError as exc:
        raise StorageError(f"partition date {ds!r} is not a calendar date") from exc
    return f"date={ds}"


class Lake:
    """Base of the two lake backends; every method takes and returns absolute URIs."""

    # Below `def list`, the name `list` means the method: annotations there say builtins.list.

    root: str

    def uri(self, *parts: str) -> str:
        """URI of a path below the lake root."""
        tail = "/".join(p.strip("/") for p in parts if p and p.strip("/"))
        # A ".." segment would escape the zone (or the lake) it names.
        if ".." in tail.split("/"):
            raise StorageError(f"lake path {tail!r} must not contain '..'")
        return f"{self.root.rstrip('/')}/{tail}" if tail else self.root

    def zone_uri(self, zone: str, pipeline: str, *parts: str) -> str:
        """URI inside a zone of one pipeline, e.g. raw/flight_delays/flights/date=.../x."""
        if zone not in ZONES:
            raise StorageError(f"unknown lake zone {zone!r}; zones are {', '.join(ZONES)}")
        if not pipeline or "/" in pipeline:
            raise StorageError(f"pipeline name {pipeline!r} must be one non-empty path segment")
        return self.uri(zone, pipeline, *parts)

    def partition_uri(self, zone: str, pipeline: str, dataset: str, ds: str, filename: str = "") -> str:
        """URI of a date partition (or a file in it) of one dataset."""
        return self.zone_uri(zone, pipeline, dataset, partition_name(ds), filename)

    # Backend primitives -------------------------------------------------------------------
    def read_bytes(self, uri: str) -> bytes:
        """Content of one file; StorageError naming the URI if it is missing or unreadable."""
        raise NotImplementedError

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write a whole object; readers see the old content or the new one, never a part."""
        raise NotImplementedError

    def exists(self, uri: str) -> bool:
        """Whether a file (not a folder or prefix) exists at the URI."""
        raise NotImplementedError

    def list(self, prefix_uri: str) -> list[str]:
        """URIs of all files below a prefix, sorted; temporary files are not listed.

        The prefix is a path, not a string prefix: `a/b` lists `a/b` and `a/b/...`, never `a/bc`.
        """
        raise NotImplementedError

    def delete(self, uri: str) -> None:
        """Delete a file or everything below a prefix; deleting nothing is not an error."""
        raise NotImplementedError

    def check(self) -> str:
        """Check the lake root can be used; a one-line description, or StorageError saying why not."""
        raise NotImplementedError

    # Helpers built on the primitives -------------------------------------------------------
    def copy(self, src_uri: str, dst_uri: str) -> None:
        self.write_bytes(dst_uri, self.read_bytes(src_uri))

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode("utf-8"))

    def read_text(self, uri: str) -> str:
        data = self.read_bytes(uri)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StorageError(f"{uri} is not UTF-8 text: {exc}") from exc

    def write_parquet(self, uri: str, df: pd.DataFrame) -> None:
        """Write a DataFrame as one Parquet file, atomically."""
        buf = io.BytesIO()
        try:
            df.to_parquet(buf, index=False, engine="pyarrow")
        except Exception as exc:  # pyarrow raises several unrelated types for unconvertible columns
            raise StorageError(f"cannot write {uri} as Parquet: {exc}") from exc
        self.write_bytes(uri, buf.getvalue())

    def read_parquet(self, uri: str, columns: builtins.list[str] | None = None) -> pd.DataFrame:
        import pandas as pd

        data = self.read_bytes(uri)
        try:
            return pd.read_parquet(io.BytesIO(data), columns=columns, engine="pyarrow")
        except Exception as exc:
            raise StorageError(f"cannot read {uri} as Parquet: {exc}") from exc

    def replace_partition(self, partition_uri: str, files: dict[str, bytes]) -> builtins.list[str]:
        """Make a partition hold exactly `files`: write them, then drop files not among them.

        The last file of `files` marks the partition complete: it is removed before anything else is written
        and written after all the others, so a partition that holds it holds the whole set (a writer killed
        half-way leaves no marker; its rerun completes the partition). Each file is written atomically, so a
        rerun replaces a partition and never duplicates it. Returns the URIs of the files written, sorted.
        """
        base = partition_uri.rstrip("/")
        wanted: dict[str, bytes] = {}
        for name, data in files.items():
            rel = name.strip("/")
            if not rel or ".." in rel.split("/"):
                raise StorageError(f"invalid file name {name!r} for partition {partition_uri}")
            wanted[f"{base}/{rel}"] = data
        if not wanted:
            raise StorageError(f"no files for partition {partition_uri}")
        *body, marker = wanted
        self.delete(marker)
        for uri in body:
            self.write_bytes(uri, wanted[uri])
        self.write_bytes(marker, wanted[marker])
        for uri in self.list(base):
            if uri not in wanted:
                self.delete(uri)
        return sorted(wanted)

    def partitions(self, zone: str, pipeline: str, dataset: str) -> builtins.list[str]:
        """Logical dates (YYYY-MM-DD) that have a partition holding at least one file, sorted."""
        prefix = self.zone_uri(zone, pipeline, dataset)
        found = set()
        for uri in self.list(prefix):
            rel = uri[len(prefix) :].lstrip("/")
            head = rel.split("/", 1)[0]
            if head.startswith("date=") and "/" in rel and _DS_PATTERN.fullmatch(head[len("date=") :]):
                found.add(head[len("date=") :])
        return sorted(found)


@dataclass
class LocalLake(Lake):
    """A lake in a local folder."""

    root: str

    def __post_init__(self) -> None:
        if not str(self.root).strip():
            raise StorageError("local lake root must not be empty")
        self.root = str(Path(self.root).expanduser().resolve())

    def read_bytes(self, uri: str) -> bytes:
        try:
            return Path(uri).read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read {uri}: {exc.strerror or exc}") from exc

    def write_bytes(self, uri: str, data: bytes) -> None:
        path = Path(uri)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot write {uri}: cannot create its folder: {exc.strerror or exc}") from exc
        # Temporary name in the same folder, then an atomic rename: no reader sees half a file.
        tmp = path.parent / f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            # Any failure (even a bad argument or an interrupt) must not leave the temporary file.
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot write {uri}: {exc.strerror or exc}") from exc
            raise
        # A writer killed before its rename (SIGKILL runs no cleanup) left its temporary file: never listed or
        # read, but the rerun that just published the file removes it.
        for stale in path.parent.glob(f"{TMP_PREFIX}{glob.escape(path.name)}-*"):
            stale.unlink(missing_ok=True)

    def exists(self, uri: str) -> bool:
        return Path(uri).is_file()

    def list(self, prefix_uri: str) -> list[str]:
        base = Path(prefix_uri)
        if base.is_file():
            return [] if base.name.startswith(TMP_PREFIX) else [str(base)]
        if not base.is_dir():
            return []
        return sorted(str(p) for p in _walk_files(base))

    def delete(self, uri: str) -> None:
        path = Path(uri)
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {uri}: {exc.strerror or exc}") from exc

    def check(self) -> str:
        root = Path(self.root)
        if root.exists():
            if not root.is_dir():
                raise StorageError(f"lake root {root} is not a folder")
            if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
                raise StorageError(f"lake root {root} is not readable and writable by this user")
            return f"local lake folder {root} is readable and writable"
        parent = root.parent
        while not parent.exists():
            parent = parent.parent
        if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
            return f"local lake folder {root} does not exist yet; it will be created on the first write"
        raise StorageError(f"lake root {root} does not exist and cannot be created in {parent}")


def _walk_files(base: Path) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(base):
        for name in files:
            if not name.startswith(TMP_PREFIX):
                yield Path(dirpath) / name


_S3_MISSING = {"NoSuchKey", "404", "NotFound"}


def _s3_code(exc: Exception) -> str:
    """Error code of a botocore ClientError ("NoSuchKey", "404", ...); "" for other errors."""
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _s3_error(action: str, uri: str, exc: Exception) -> StorageError:
    """A StorageError naming the URI, with the S3 error code spelt out when there is one."""
    code = _s3_code(exc)
    if code in _S3_MISSING:
        return StorageError(f"cannot {action} {uri}: no such object")
    if code == "NoSuchBucket":
        return StorageError(f"cannot {action} {uri}: the bucket does not exist")
    return StorageError(f"cannot {action} {uri}: {exc}")


@dataclass
class S3Lake(Lake):
    """A lake under s3://bucket/prefix on any S3-compatible endpoint.

    `client_kwargs` go to `boto3.client("s3", ...)` (endpoint_url, region_name, credentials, config);
    they hold secrets, so they are left out of the repr.
    """

    root: str
    client_kwargs: dict[str, Any] = field(default_factory=dict, repr=False)
    _client: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bucket, _ = self.split(self.root) if self.root.startswith("s3://") else ("", "")
        if not bucket:
            raise StorageError(f"S3 lake root must look like s3://bucket/prefix, got {self.root!r}")
        self.root = self.root.rstrip("/")

    def __getstate__(self) -> dict[str, Any]:
        # A boto3 client cannot be pickled; the copy makes its own on first use.
        state = dict(self.__dict__)
        state["_client"] = None
        return state

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
            raise _s3_error("read", uri, exc) from exc

    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = self.split(uri)
        if not key:
            raise StorageError(f"cannot write {uri}: no object key")
        try:
            # A PUT replaces the object whole: S3 readers never see a partial object.
            self.client.put_object(Bucket=bucket, Key=key, Body=data)
        except Exception as exc:
            raise _s3_error("write", uri, exc) from exc

    def exists(self, uri: str) -> bool:
        bucket, key = self.split(uri)
        if not key:
            return False
        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            if _s3_code(exc) in _S3_MISSING:
                return False
            raise _s3_error("check", uri, exc) from exc
        return True

    def list(self, prefix_uri: str) -> list[str]:
        bucket, key = self.split(prefix_uri)
        folder = key.rstrip("/") + "/" if key.rstrip("/") else ""
        uris: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=key):
                for obj in page.get("Contents", []):
                    k = obj["Key"]
                    # Prefix "a/b" also matches "a/bc": keep only the object itself and its children.
                    if k == key or k.startswith(folder):
                        uris.append(f"s3://{bucket}/{k}")
        except Exception as exc:
            raise _s3_error("list", prefix_uri, exc) from exc
        return sorted(set(uris))

    def delete(self, uri: str) -> None:
        bucket, _ = self.split(uri)
        keys = [self.split(u)[1] for u in self.list(uri)]
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            try:
                resp = self.client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk]})
            except Exception as exc:
                raise _s3_error("delete", uri, exc) from exc
            # DeleteObjects answers 200 even when some keys fail; the failures are in the body.
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                raise StorageError(
                    f"cannot delete {uri}: {len(errors)} objects failed, e.g. "
                    f"s3://{bucket}/{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )

    def check(self) -> str:
        bucket, key = self.split(self.root)
        try:
            self.client.head_bucket(Bucket=bucket)
        except Exception as exc:
            # HEAD answers carry no error body: a missing bucket is a bare 404.
            if _s3_code(exc) in _S3_MISSING | {"NoSuchBucket"}:
                raise StorageError(f"cannot access {self.root}: bucket {bucket!r} does not exist") from exc
            raise _s3_error("access", self.root, exc) from exc
        try:
            self.client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        except Exception as exc:
            raise _s3_error("list", self.root, exc) from exc
        endpoint = self.client_kwargs.get("endpoint_url") or "AWS S3"
        return f"S3 lake {self.root} is reachable at {endpoint}"


def open_lake(root: str, s3_client_kwargs: dict[str, Any] | None = None) -> Lake:
    """The lake at `root`: s3://bucket/prefix or a local folder (optionally file://)."""
    if not root or not root.strip():
        raise StorageError("lake root is empty: give a local folder or s3://bucket/prefix")
    if root.startswith("s3://"):
        return S3Lake(root, dict(s3_client_kwargs or {}))
    if "://" in root and not root.startswith("file://"):
        raise StorageError(f"unsupported lake root {root!r}: use a local folder or s3://bucket/prefix")
    return LocalLake(root.removeprefix("file://"))
