"""Reading and writing artifacts under storage URIs: the only code that touches S3 or files for them.

Everything goes through boto3 with the standard AWS configuration chain: credentials from
the environment, ``~/.aws``, IRSA or Workload Identity, and the endpoint from
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (boto3 reads these itself). The same code thus
runs against AWS S3, MinIO, GCS interoperability and the local test server.

``file://`` URIs behave the same way, so a laptop run and a cluster run differ only in the URI
(:class:`~healthnav.contracts.uris.StorageURI`). Writes of whole objects are atomic on both
backends (S3 PUTs are; files are renamed into place), which is what lets a dataset's manifest
be "written last" meaningfully. boto3 is imported when a client is first needed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from healthnav.contracts.errors import HealthnavError
from healthnav.contracts.uris import StorageURI

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SHA256_METADATA_KEY = "sha256"


class StorageError(HealthnavError, RuntimeError):
    """An artifact could not be read or written; the message names the URI."""


@functools.cache
def s3_client() -> S3Client:
    """A boto3 S3 client from the standard chain; path-style when a custom endpoint is set."""
    import boto3
    from botocore.config import Config

    custom = bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    config = Config(
        retries={"max_attempts": 5, "mode": "adaptive"},
        s3={"addressing_style": "path" if custom else "auto"},
    )
    return boto3.session.Session().client("s3", config=config)


def reset_clients() -> None:
    """Forget cached clients (after the endpoint or credentials in the environment changed)."""
    s3_client.cache_clear()


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _client_error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def read_bytes(uri: str | StorageURI) -> bytes:
    u = StorageURI.parse(uri)
    try:
        if u.scheme == "file":
            return u.local_path.read_bytes()
        return s3_client().get_object(Bucket=u.bucket, Key=u.key)["Body"].read()
    except FileNotFoundError as exc:
        raise StorageError(f"{u}: not found") from exc
    except Exception as exc:
        if _client_error_code(exc) in ("NoSuchKey", "404", "NoSuchBucket"):
            raise StorageError(f"{u}: not found") from exc
        raise


def read_text(uri: str | StorageURI) -> str:
    return read_bytes(uri).decode("utf-8")


def write_bytes(uri: str | StorageURI, data: bytes, content_type: str = "application/octet-stream") -> None:
    """Write a whole object atomically (readers see the old object or the new one)."""
    u = StorageURI.parse(uri)
    if u.scheme == "file":
        path = u.local_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
            tmp.write(data)
        os.chmod(tmp.name, 0o644)  # NamedTemporaryFile creates 0600; artifacts are meant to be shared
        os.replace(tmp.name, path)
        return
    s3_client().put_object(
        Bucket=u.bucket,
        Key=u.key,
        Body=data,
        ContentType=content_type,
        Metadata={SHA256_METADATA_KEY: hashlib.sha256(data).hexdigest()},
    )


def write_text(uri: str | StorageURI, text: str, content_type: str = "text/plain; charset=utf-8") -> None:
    write_bytes(uri, text.encode("utf-8"), content_type)


def exists(uri: str | StorageURI) -> bool:
    u = StorageURI.parse(uri)
    if u.scheme == "file":
        return u.local_path.exists()
    try:
        s3_client().head_object(Bucket=u.bucket, Key=u.key)
        return True
    except Exception as exc:
        if _client_error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def list_objects(prefix: str | StorageURI) -> Iterator[tuple[StorageURI, int]]:
    """Every object under a prefix (recursively), with its size, in key order."""
    u = StorageURI.parse(prefix).as_prefix()
    if u.scheme == "file":
        root = u.local_path
        if not root.is_dir():
            return
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
            yield StorageURI("file", "", str(path).lstrip("/")), path.stat().st_size
        return
    paginator = s3_client().get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=u.bucket, Prefix=u.key):
        for obj in page.get("Contents", []):
            yield StorageURI("s3", u.bucket, obj["Key"]), int(obj["Size"])


def remote_sha256(uri: str | StorageURI) -> str | None:
    """The sha256 recorded when we uploaded the object, or None if unknown/missing."""
    u = StorageURI.parse(uri)
    if u.scheme == "file":
        return sha256_file(u.local_path) if u.local_path.is_file() else None
    try:
        head = s3_client().head_object(Bucket=u.bucket, Key=u.key)
    except Exception as exc:
        if _client_error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return head.get("Metadata", {}).get(SHA256_METADATA_KEY)


def upload_file(local: str | os.PathLike[str], uri: str | StorageURI, *, sha256: str | None = None) -> bool:
    """Upload unless an identical object (same sha256) is already there. Returns True if it wrote."""
    u = StorageURI.parse(uri)
    digest = sha256 or sha256_file(local)
    if remote_sha256(u) == digest:
        return False
    if u.scheme == "file":
        write_bytes(u, Path(local).read_bytes())
        return True
    s3_client().upload_file(
        str(local), u.bucket, u.key, ExtraArgs={"Metadata": {SHA256_METADATA_KEY: digest}}
    )
    return True


def upload_dir(
    local_dir: str | os.PathLike[str], prefix: str | StorageURI, *, last: tuple[str, ...] = ()
) -> int:
    """Upload a directory tree idempotently; files named in ``last`` go after all others.

    Returns how many files were written (0 when everything was already there).
    """
    root = Path(local_dir)
    base = StorageURI.parse(prefix).as_prefix()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(root).as_posix() in last)
    return sum(upload_file(p, base.join(p.relative_to(root).as_posix())) for p in files)


def download_dir(prefix: str | StorageURI, local_dir: str | os.PathLike[str]) -> Path:
    """Mirror a prefix into a local directory, skipping files that are already identical."""
    base = StorageURI.parse(prefix).as_prefix()
    dest = Path(local_dir)
    found = False
    for obj, size in list_objects(base):
        found = True
        rel = obj.key[len(base.key) :]
        target = dest / rel
        if target.is_file() and target.stat().st_size == size:
            known = remote_sha256(obj)
            if known is None or known == sha256_file(target):
                continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if obj.scheme == "file":
            target.write_bytes(obj.local_path.read_bytes())
        else:
            s3_client().download_file(obj.bucket, obj.key, str(target))
    if not found:
        raise StorageError(f"{base}: no objects under this prefix")
    return dest
