"""The URI grammar of the platform: where models, datasets, adapters and run outputs live.

One grammar, written once as patterns that both the Kubernetes API server (RE2, in the CRDs'
``pattern``) and Python accept, and parsed by :class:`StorageURI`:

* ``s3://bucket/key`` — any S3-compatible store (AWS, MinIO, GCS interoperability);
* ``file:///absolute/path`` — the local file system (a laptop, or files baked into an image);
* ``org/name`` — a model hub id (models only), resolved by transformers or vLLM themselves.

Other schemes are refused with :data:`OTHER_SCHEME_MESSAGE`: an http(s) URL fetched from inside
the cluster could reach link-local or cloud metadata endpoints, so remote files are staged in
S3 first. ``..`` path segments are refused too. Only the standard library is imported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

# RE2 (API server) and Rust regex (pydantic) accept these: only their common subset is used.
BUCKET = r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]"
S3_URI = rf"^s3://{BUCKET}(/[^\s]*)?$"
FILE_URI = r"^file:///[^\s]*$"
HUB_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9_.\-]+$"
MODEL_URI = rf"({S3_URI})|({FILE_URI})|({HUB_ID})"
"""A base model: in S3, on the local file system, or on a model hub."""
STORAGE_URI = rf"({S3_URI})|({FILE_URI})"
"""A dataset, adapter or output prefix: in S3 or on the local file system, never a hub."""

OTHER_SCHEME_MESSAGE = (
    "only s3://bucket/prefix, file:///path or a model hub id (org/name) are accepted; http(s) and other "
    "schemes are refused (they could reach link-local or cloud metadata endpoints): stage the files in S3"
)
DOT_DOT_MESSAGE = "must not contain '..' path segments"
NO_FILE_MESSAGE = "must be an s3:// URI: a file:// path inside the training pod would be lost when it exits"

_BUCKET_RE = re.compile(rf"^{BUCKET}$")
_HUB_ID_RE = re.compile(HUB_ID)
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def check_uri(value: str, *, allow_file: bool = True) -> str:
    """``value`` if its scheme and path are allowed, else ValueError with the rule's message.

    The Python twin of the CRDs' CEL rules on URI fields (which reuse these messages).
    """
    if _SCHEME_RE.match(value) and not value.startswith(("s3://", "file:///")):
        raise ValueError(OTHER_SCHEME_MESSAGE)
    if "/../" in value or value.endswith("/.."):
        raise ValueError(DOT_DOT_MESSAGE)
    if not allow_file and value.startswith("file:"):
        raise ValueError(NO_FILE_MESSAGE)
    return value


def is_hub_id(value: str) -> bool:
    """True for a model hub id such as ``BioMistral/BioMistral-7B`` (not a URI, not a path)."""
    return bool(_HUB_ID_RE.match(value))


@dataclass(frozen=True)
class StorageURI:
    """A parsed ``s3://bucket/key`` or ``file:///abs/path``; ``key`` has no leading slash."""

    scheme: Literal["s3", "file"]
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str | StorageURI) -> StorageURI:
        """Parse a URI; an absolute local path is taken as ``file://``. ValueError names the URI."""
        if isinstance(uri, StorageURI):
            return uri
        parsed = urlparse(uri)
        if parsed.scheme == "s3":
            if not _BUCKET_RE.match(parsed.netloc or ""):
                raise ValueError(f"{uri!r}: not a valid S3 bucket name in s3://BUCKET/key")
            return cls("s3", parsed.netloc, parsed.path.lstrip("/"))
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise ValueError(f"{uri!r}: file URIs must be file:///absolute/path")
            return cls("file", "", unquote(parsed.path).lstrip("/"))
        if parsed.scheme == "" and uri.startswith("/"):
            return cls("file", "", uri.lstrip("/"))
        raise ValueError(f"{uri!r}: expected s3://bucket/key or file:///path")

    @classmethod
    def parse_location(cls, location: str | Path | StorageURI) -> StorageURI:
        """Like :meth:`parse`, but a relative or ``~`` local path is accepted too (resolved here)."""
        if isinstance(location, StorageURI):
            return location
        text = str(location)
        if "://" not in text:
            text = "file://" + str(Path(text).expanduser().resolve())
        return cls.parse(text)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.scheme == "s3" else f"file:///{self.key}"

    @property
    def local_path(self) -> Path:
        if self.scheme != "file":
            raise ValueError(f"{self} is not a file:// URI")
        return Path("/" + self.key)

    def join(self, *parts: str) -> StorageURI:
        """Child URI; ``uri.join("adapter/")`` keeps a trailing slash for prefixes."""
        key = self.key
        for part in parts:
            if not part:
                continue
            key = (key.rstrip("/") + "/" + part.lstrip("/")) if key else part.lstrip("/")
        return StorageURI(self.scheme, self.bucket, key)

    def as_prefix(self) -> StorageURI:
        return (
            self
            if not self.key or self.key.endswith("/")
            else StorageURI(self.scheme, self.bucket, self.key + "/")
        )
