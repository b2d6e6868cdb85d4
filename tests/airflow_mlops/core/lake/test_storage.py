"""Tests of the lake on a local folder and on a real S3 API (moto server process)."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from airflow_mlops.core.lake.storage import (
    TMP_PREFIX,
    LocalLake,
    S3Lake,
    StorageError,
    open_lake,
    partition_name,
)


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest) -> Any:
    """The same tests on both backends."""
    if request.param == "local":
        return open_lake(str(request.getfixturevalue("lake_root")))
    root, kwargs = request.getfixturevalue("s3_lake_root")
    return open_lake(root, kwargs)


def raw_files(lake: Any) -> list[str]:
    """Every file under the lake root, seen directly on disk or through a plain boto3 listing."""
    if isinstance(lake, LocalLake):
        return sorted(str(p.relative_to(lake.root)) for p in Path(lake.root).rglob("*") if p.is_file())
    bucket, prefix = S3Lake.split(lake.root)
    pages = lake.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    return sorted(obj["Key"][len(prefix) + 1 :] for page in pages for obj in page.get("Contents", []))


def test_bytes_and_text_round_trip(lake: Any) -> None:
    payload = bytes(range(256)) * 1000
    uri = lake.uri("reports", "p", "blob.bin")
    lake.write_bytes(uri, payload)
    assert lake.read_bytes(uri) == payload
    text = "dépôt — 2013 ✈\nsecond line\n"
    lake.write_text(lake.uri("reports", "p", "t.txt"), text)
    assert lake.read_text(lake.uri("reports", "p", "t.txt")) == text
    lake.write_bytes(uri, b"shorter")
    assert lake.read_bytes(uri) == b"shorter"
    assert raw_files(lake) == ["reports/p/blob.bin", "reports/p/t.txt"]


def test_copy(lake: Any) -> None:
    lake.write_bytes(lake.uri("landing", "p", "a.csv"), b"x,y\n1,2\n")
    lake.copy(lake.uri("landing", "p", "a.csv"), lake.uri("raw", "p", "a", "a.csv"))
    assert lake.read_bytes(lake.uri("raw", "p", "a", "a.csv")) == b"x,y\n1,2\n"


def test_parquet_round_trip(lake: Any) -> None:
    df = pd.DataFrame(
        {
            "i": pd.array([1, None, 3], dtype="Int64"),
            "f": [0.5, float("nan"), -2.25],
            "s": pd.array(["a", None, "ü"], dtype="string"),
            "t": pd.to_datetime(pd.Series(["2013-01-01T05:00:00Z", "2013-01-01T06:00:00Z", None]), utc=True),
            "b": pd.array([True, None, False], dtype="boolean"),
        }
    )
    uri = lake.partition_uri("features", "p", "features", "2013-01-01", "part.parquet")
    lake.write_parquet(uri, df)
    back = lake.read_parquet(uri)
    pd.testing.assert_frame_equal(back, df)
    pd.testing.assert_frame_equal(lake.read_parquet(uri, columns=["s", "i"]), df[["s", "i"]])


def test_read_parquet_of_other_bytes_names_uri(lake: Any) -> None:
    uri = lake.uri("raw", "p", "not.parquet")
    lake.write_bytes(uri, b"a,b\n1,2\n")
    with pytest.raises(StorageError, match=f"cannot read {uri} as Parquet"):
        lake.read_parquet(uri)


def test_exists(lake: Any) -> None:
    uri = lake.uri("raw", "p", "d", "file.csv")
    assert not lake.exists(uri)
    lake.write_bytes(uri, b"1")
    assert lake.exists(uri)
    # A folder/prefix or a longer name sharing the prefix is not the file.
    assert not lake.exists(lake.uri("raw", "p", "d"))
    assert not lake.exists(lake.uri("raw", "p", "d", "file.cs"))
    lake.write_bytes(lake.uri("raw", "p", "d", "file.csv2"), b"2")
    lake.delete(uri)
    assert not lake.exists(uri)
    assert lake.exists(lake.uri("raw", "p", "d", "file.csv2"))


def test_list_uses_path_prefix_semantics(lake: Any) -> None:
    # Locally a/b is a folder, so a file a/b cannot exist too; on S3 both can.
    both = ["a/b"] if isinstance(lake, S3Lake) else []
    for rel in ["a/b/1.csv", "a/b/sub/2.csv", "a/bc/3.csv", "a/b.csv", "z/4.csv", *both]:
        lake.write_bytes(lake.uri("raw", rel), rel.encode())
    listed = [u[len(lake.uri("raw")) + 1 :] for u in lake.list(lake.uri("raw", "a/b"))]
    expected = ["a/b/1.csv", "a/b/sub/2.csv", *both]
    assert listed == sorted(expected)
    assert lake.list(lake.uri("raw", "a/b/")) == lake.list(lake.uri("raw", "a/b"))
    assert lake.list(lake.uri("raw", "a", "b.csv")) == [lake.uri("raw", "a", "b.csv")]
    assert lake.list(lake.uri("raw", "nothing")) == []
    assert lake.list(lake.root) == sorted(lake.list(lake.root))
    assert len(lake.list(lake.root)) == len(raw_files(lake))


def test_delete_file_and_prefix(lake: Any) -> None:
    for rel in ["x/1", "x/2/3", "xy/4", "w/5"]:
        lake.write_bytes(lake.uri("raw", rel), b"-")
    lake.delete(lake.uri("raw", "w", "5"))
    assert raw_files(lake) == ["raw/x/1", "raw/x/2/3", "raw/xy/4"]
    lake.delete(lake.uri("raw", "x"))
    assert raw_files(lake) == ["raw/xy/4"]
    lake.delete(lake.uri("raw", "missing"))  # nothing to delete is fine
    lake.delete(lake.uri("raw", "x"))
    assert raw_files(lake) == ["raw/xy/4"]


@pytest.mark.slow
def test_s3_list_and_delete_more_than_1000_objects(s3_lake_root: tuple[str, dict[str, Any]]) -> None:
    # Listing pages and DeleteObjects calls hold at most 1000 keys each.
    from concurrent.futures import ThreadPoolExecutor

    lake = open_lake(*s3_lake_root)
    part = lake.partition_uri("raw", "p", "d", "2013-01-01")
    keep = lake.partition_uri("raw", "p", "d", "2013-01-02", "f0000")
    uris = [f"{part}/f{i:04d}" for i in range(1003)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda u: lake.write_bytes(u, b""), [*uris, keep]))
    assert lake.list(part) == uris
    lake.delete(part)
    assert lake.list(part) == []
    assert lake.exists(keep)


def test_partition_uri_layout(lake: Any) -> None:
    uri = lake.partition_uri("raw", "flight_delays", "flights", "2013-01-02", "part.parquet")
    assert uri == f"{lake.root}/raw/flight_delays/flights/date=2013-01-02/part.parquet"
    assert lake.partition_uri("raw", "flight_delays", "flights", "2013-01-02") == uri.rsplit("/", 1)[0]
    lake.write_bytes(uri, b"x")
    assert raw_files(lake) == ["raw/flight_delays/flights/date=2013-01-02/part.parquet"]


@pytest.mark.parametrize("ds", ["2013-1-2", "20130102", "2013-02-30", "2013-01-02T00:00:00", ""])
def test_partition_date_must_be_iso_day(ds: str) -> None:
    with pytest.raises(StorageError, match="partition date"):
        partition_name(ds)


def test_zone_and_path_checks(lake: Any) -> None:
    with pytest.raises(StorageError, match="unknown lake zone 'rawdata'"):
        lake.zone_uri("rawdata", "p")
    with pytest.raises(StorageError, match=r"must not contain '\.\.'"):
        lake.zone_uri("raw", "p", "../../etc")
    with pytest.raises(StorageError, match="pipeline name"):
        lake.zone_uri("raw", "")


def test_replace_partition_rerun_replaces(lake: Any) -> None:
    part = lake.partition_uri("raw", "p", "flights", "2013-01-01")
    other = lake.partition_uri("raw", "p", "flights", "2013-01-02", "keep.csv")
    lake.write_bytes(other, b"other day")
    first = lake.replace_partition(part, {"a.csv": b"1", "b.csv": b"2", "sub/c.csv": b"3"})
    assert first == [f"{part}/a.csv", f"{part}/b.csv", f"{part}/sub/c.csv"]
    second = lake.replace_partition(part, {"b.csv": b"two", "d.csv": b"4"})
    assert second == [f"{part}/b.csv", f"{part}/d.csv"]
    assert lake.list(part) == second
    assert lake.read_bytes(f"{part}/b.csv") == b"two"
    again = lake.replace_partition(part, {"b.csv": b"two", "d.csv": b"4"})
    assert again == second and lake.list(part) == second
    assert lake.read_bytes(other) == b"other day"  # neighbouring partitions untouched
    with pytest.raises(StorageError, match="invalid file name"):
        lake.replace_partition(part, {"../x.csv": b""})


def test_partitions(lake: Any) -> None:
    assert lake.partitions("raw", "p", "flights") == []
    for ds in ["2013-01-03", "2013-01-01", "2013-01-02"]:
        lake.write_bytes(lake.partition_uri("raw", "p", "flights", ds, "f.csv"), b"x")
    lake.write_bytes(lake.partition_uri("raw", "p", "flightsx", "2013-02-01", "f.csv"), b"x")
    lake.write_bytes(lake.partition_uri("raw", "p", "flights", "2013-01-02", "g.csv"), b"x")
    lake.write_bytes(lake.zone_uri("raw", "p", "flights", "_SUCCESS"), b"")
    assert lake.partitions("raw", "p", "flights") == ["2013-01-01", "2013-01-02", "2013-01-03"]
    lake.delete(lake.partition_uri("raw", "p", "flights", "2013-01-02"))
    assert lake.partitions("raw", "p", "flights") == ["2013-01-01", "2013-01-03"]


def test_missing_object_error_names_uri(lake: Any) -> None:
    uri = lake.uri("raw", "p", "missing.csv")
    with pytest.raises(StorageError, match=f"cannot read {uri}"):
        lake.read_bytes(uri)
    with pytest.raises(StorageError, match=f"cannot read {uri}"):
        lake.read_parquet(uri)


def test_check(lake: Any) -> None:
    assert lake.root in lake.check()


def test_s3_missing_bucket_errors(s3_lake_root: tuple[str, dict[str, Any]]) -> None:
    _, kwargs = s3_lake_root
    lake = open_lake("s3://no-such-bucket-here/lake", kwargs)
    uri = lake.uri("raw", "x.csv")
    with pytest.raises(StorageError, match=f"cannot read {uri}: the bucket does not exist"):
        lake.read_bytes(uri)
    with pytest.raises(StorageError, match=f"cannot write {uri}"):
        lake.write_bytes(uri, b"x")
    with pytest.raises(StorageError, match="cannot list s3://no-such-bucket-here/lake/raw"):
        lake.list(lake.uri("raw"))
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        lake.check()


def test_s3_lake_at_bucket_root(s3_lake_root: tuple[str, dict[str, Any]]) -> None:
    root, kwargs = s3_lake_root
    bucket_root = root.rsplit("/", 1)[0]
    lake = open_lake(bucket_root + "/", kwargs)
    assert lake.root == bucket_root
    lake.write_bytes(lake.uri("raw", "p", "f.csv"), b"x")
    assert lake.list(lake.root) == [f"{bucket_root}/raw/p/f.csv"]
    lake.delete(lake.root)
    assert lake.list(lake.root) == []


def test_s3_lake_repr_hides_secrets_and_pickles(s3_lake_root: tuple[str, dict[str, Any]]) -> None:
    root, kwargs = s3_lake_root
    lake = open_lake(root, kwargs)
    lake.write_bytes(lake.uri("raw", "f"), b"v")  # creates the client
    assert kwargs["aws_secret_access_key"] not in repr(lake)
    copy = pickle.loads(pickle.dumps(lake))
    assert copy.read_bytes(copy.uri("raw", "f")) == b"v"


def test_local_reader_never_sees_a_partial_write(lake_root: Path) -> None:
    lake = open_lake(str(lake_root))
    uri = lake.uri("raw", "p", "big.bin")
    payloads = [bytes([n]) * (4 * 1024 * 1024 + n) for n in (1, 2)]
    lake.write_bytes(uri, payloads[0])
    rewrites = 30
    done = threading.Event()

    def writer() -> None:
        try:
            for i in range(rewrites):
                lake.write_bytes(uri, payloads[(i + 1) % 2])
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    try:
        # Read for as long as the writer keeps replacing the file (at least a few times).
        while not done.is_set() or reads < 5:
            data = lake.read_bytes(uri)
            assert data in payloads, f"read {len(data)} bytes, not one of the complete payloads"
            reads += 1
    finally:
        thread.join()
    assert lake.read_bytes(uri) == payloads[rewrites % 2]
    assert [p.name for p in (lake_root / "raw" / "p").iterdir()] == ["big.bin"]


def test_local_failed_write_leaves_no_temporary_file(lake_root: Path) -> None:
    lake = open_lake(str(lake_root))
    uri = lake.uri("raw", "p", "f.csv")
    lake.write_bytes(uri, b"old")
    with pytest.raises(TypeError):
        lake.write_bytes(uri, "not bytes")  # type: ignore[arg-type]
    (lake_root / "raw" / "p" / "folder").mkdir()
    with pytest.raises(StorageError, match=f"cannot write {lake.uri('raw', 'p', 'folder')}"):
        lake.write_bytes(lake.uri("raw", "p", "folder"), b"new")
    assert sorted(p.name for p in (lake_root / "raw" / "p").iterdir()) == ["f.csv", "folder"]
    assert lake.read_bytes(uri) == b"old"


def test_local_write_under_a_file_names_uri(lake_root: Path) -> None:
    lake = open_lake(str(lake_root))
    lake.write_bytes(lake.uri("raw", "p"), b"a file where a folder should be")
    uri = lake.uri("raw", "p", "f.csv")
    with pytest.raises(StorageError, match=f"cannot write {uri}"):
        lake.write_bytes(uri, b"x")


def test_local_temporary_files_are_not_listed(lake_root: Path) -> None:
    lake = open_lake(str(lake_root))
    lake.write_bytes(lake.uri("raw", "p", "d", "f.csv"), b"x")
    (lake_root / "raw" / "p" / "d" / f"{TMP_PREFIX}f.csv-123").write_bytes(b"half")
    assert lake.list(lake.uri("raw", "p")) == [lake.uri("raw", "p", "d", "f.csv")]


def test_local_check(tmp_path: Path) -> None:
    assert "will be created" in open_lake(str(tmp_path / "new" / "lake")).check()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="is not a folder"):
        open_lake(str(tmp_path / "file")).check()


def test_open_lake_roots(tmp_path: Path) -> None:
    assert isinstance(open_lake(str(tmp_path)), LocalLake)
    assert open_lake(f"file://{tmp_path}/x").root == str(tmp_path / "x")
    assert isinstance(open_lake("s3://bucket/prefix/"), S3Lake)
    assert open_lake("s3://bucket/prefix/").root == "s3://bucket/prefix"


@pytest.mark.parametrize(
    ("root", "message"),
    [
        ("gs://bucket/x", "unsupported lake root 'gs://bucket/x'"),
        ("http://host/x", "unsupported lake root"),
        ("", "lake root is empty"),
        ("   ", "lake root is empty"),
        ("s3://", "S3 lake root must look like s3://bucket/prefix"),
        ("s3:///prefix", "S3 lake root must look like s3://bucket/prefix"),
    ],
)
def test_open_lake_rejects(root: str, message: str) -> None:
    with pytest.raises(StorageError, match=message):
        open_lake(root)
