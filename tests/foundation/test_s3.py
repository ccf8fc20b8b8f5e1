"""The S3 server speaks the real protocol: boto3 and healthnav's storage layer round-trip through it."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from healthnav.contracts import storage
from healthnav.contracts.storage import StorageError
from healthnav.contracts.uris import StorageURI, is_hub_id


def test_boto3_round_trip(s3_bucket: str) -> None:
    client = boto3.client("s3")  # endpoint and credentials from the standard AWS environment
    client.put_object(Bucket=s3_bucket, Key="hello/world.txt", Body=b"healthnav")
    assert client.get_object(Bucket=s3_bucket, Key="hello/world.txt")["Body"].read() == b"healthnav"
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == ["hello/world.txt"]


def test_storage_upload_is_idempotent_and_download_mirrors(s3_bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "adapter").mkdir(parents=True)
    (src / "adapter" / "adapter_config.json").write_text('{"r": 16}')
    (src / "metrics.json").write_text('{"loss": 1.0}')
    prefix = f"s3://{s3_bucket}/finetunes/ns/job/"
    assert storage.upload_dir(src, prefix, last=("metrics.json",)) == 2
    assert storage.upload_dir(src, prefix) == 0  # nothing changed, nothing written
    (src / "metrics.json").write_text('{"loss": 0.5}')
    assert storage.upload_dir(src, prefix) == 1
    dest = storage.download_dir(prefix, tmp_path / "dest")
    assert (dest / "metrics.json").read_text() == '{"loss": 0.5}'
    assert (dest / "adapter" / "adapter_config.json").read_text() == '{"r": 16}'
    assert storage.remote_sha256(prefix + "metrics.json") == storage.sha256_file(src / "metrics.json")


def test_missing_object_is_a_clear_error(s3_bucket: str) -> None:
    with pytest.raises(StorageError, match=f"s3://{s3_bucket}/nope.json: not found"):
        storage.read_bytes(f"s3://{s3_bucket}/nope.json")
    assert not storage.exists(f"s3://{s3_bucket}/nope.json")


@pytest.mark.unit
def test_uri_parsing() -> None:
    u = StorageURI.parse("s3://models/finetunes/")
    assert (u.scheme, u.bucket, u.key) == ("s3", "models", "finetunes/")
    assert str(u.join("ns", "job", "adapter/")) == "s3://models/finetunes/ns/job/adapter/"
    assert StorageURI.parse("file:///tmp/x").local_path == Path("/tmp/x")
    for bad in ("http://169.254.169.254/latest", "s3://Bad_Bucket/x", "relative/path"):
        with pytest.raises(ValueError):
            StorageURI.parse(bad)
    assert is_hub_id("BioMistral/BioMistral-7B")
    assert not is_hub_id("s3://models/x")
