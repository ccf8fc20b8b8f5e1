"""Staging a locally built dataset to object storage.

Idempotent and resumable by content: every file's sha256 is compared with the one recorded
on the remote object, so a rerun after an interruption uploads only what is missing or
different. The local dataset is verified first (a corrupted shard is never staged), the
manifest goes up last, and the staged copy is verified remotely afterwards.
"""

from __future__ import annotations

from pathlib import Path

from healthnav.contracts import storage
from healthnav.contracts.dataset import MANIFEST_NAME, DatasetError, verify
from healthnav.contracts.uris import StorageURI


def stage_dataset(directory: str | Path, uri: str) -> int:
    """Upload ``directory`` to ``uri``; returns how many files were written (0 if all present)."""
    local = Path(directory)
    if not (local / MANIFEST_NAME).is_file():
        raise DatasetError(f"{local}: no {MANIFEST_NAME}; not a built dataset")
    report = verify(local)
    if not report.ok:
        raise DatasetError(
            f"{local}: refusing to stage a dataset that fails verification: {report.problems[0]}"
        )
    dest = StorageURI.parse(uri).as_prefix()
    remote_manifest = dest.join(MANIFEST_NAME)
    known = storage.remote_sha256(remote_manifest)
    if known is not None and known != storage.sha256_file(local / MANIFEST_NAME):
        # a different dataset is there: withdraw its manifest first so no mix is ever visible
        _delete(remote_manifest)
    written = storage.upload_dir(local, dest, last=(MANIFEST_NAME,))
    remote = verify(dest)
    if not remote.ok:
        raise DatasetError(f"{dest}: staged copy fails verification: {remote.problems[0]}")
    return written


def _delete(uri: StorageURI) -> None:
    if uri.scheme == "file":
        uri.local_path.unlink(missing_ok=True)
    else:
        storage.s3_client().delete_object(Bucket=uri.bucket, Key=uri.key)
