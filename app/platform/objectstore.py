"""Object storage as the appliance sees it: a port, whatever S3 provider is behind it.

`ObjectStore` names every call the rest of the appliance makes on storage
and nothing more; app/platform/storage.py (the minio SDK) is its one
adapter, and the only module that knows the SDK, its types and its errors.
The values that cross the port (`ObjectInfo`, `UploadedPart`, ...) and the
errors (`StorageRefused`; `app.platform.errors.Unavailable` for transport
failures and a busy server) are plain Python, so no caller depends on a
provider library.

`CheckedStore` adds what the conformance check (app/platform/conformance.py)
inspects besides: the bucket setup `ensure_bucket` performs, one step at a
time and with the provider's answer, and object tags.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class UploadedPart:
    """One part of an unfinished multipart upload, as storage holds it."""

    number: int
    size: int
    etag: str
    last_modified: dt.datetime | None


@dataclass(frozen=True)
class MultipartUpload:
    """An unfinished multipart upload (neither completed nor aborted)."""

    key: str
    upload_id: str
    initiated: dt.datetime | None


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: dt.datetime | None
    content_type: str | None = None
    # As stored with the object (a client may send one with a presigned PUT).
    content_encoding: str | None = None


@dataclass(frozen=True)
class LifecycleRule:
    """A bucket lifecycle rule by prefix: expire objects, abort unfinished
    multipart uploads (days; None: not part of the rule)."""

    rule_id: str
    enabled: bool
    prefix: str
    expire_days: int | None
    abort_multipart_days: int | None


class StorageRefused(Exception):
    """Storage answered and said no (access denied, not implemented, ...):
    its error code, HTTP status and message, as the provider gave them."""

    def __init__(self, code: str, status: int | None, message: str):
        super().__init__(f"{status or '?'} {code}: {message}")
        self.code, self.status, self.message = code, status, message


class ObjectStore(Protocol):
    """What the appliance needs from object storage (one bucket)."""

    # Whether anyone may read assets/ without a signature (a bucket policy).
    public_assets: bool

    # -- setup and health
    def ensure_bucket(self) -> None: ...
    def reset_connections(self) -> None: ...
    def watch(self, reachability, slots: int, stalled_after: float) -> None: ...
    def check_reachable(self, timeout: float) -> None: ...
    def check_writable(self, timeout: float) -> None: ...

    # -- presigned URLs (at the public endpoint; `internal`: at storage's own)
    def presigned_put(self, key: str, ttl: int, *, internal: bool = False) -> str: ...
    def presigned_get(self, key: str, ttl: int, *, internal: bool = False,
                      response_headers: dict[str, str] | None = None) -> str: ...
    def presigned_part_put(self, key: str, upload_id: str, part_number: int, ttl: int, *,
                           internal: bool = False) -> str: ...

    # -- multipart uploads
    def create_multipart(self, key: str) -> str: ...
    def list_parts(self, key: str, upload_id: str) -> list[UploadedPart] | None: ...
    def complete_multipart(self, key: str, upload_id: str, parts: list[UploadedPart]) -> bool: ...
    def abort_multipart(self, key: str, upload_id: str) -> None: ...
    def list_multipart_uploads(self, prefix: str) -> Iterator[MultipartUpload]: ...

    # -- objects
    def stat(self, key: str) -> ObjectInfo | None: ...
    def exists(self, key: str) -> bool: ...
    def copy(self, src: str, dst: str) -> None: ...
    def put(self, key: str, data: bytes, content_type: str = ..., cache_control: str | None = None) -> None: ...
    def put_file(self, key: str, path, content_type: str = ...) -> None: ...
    def put_stream(self, key: str, chunks: Iterator[bytes], length: int, content_type: str = ...,
                   cache_control: str | None = None) -> None: ...
    def get_file(self, key: str, path) -> None: ...
    def read_range(self, key: str, offset: int, length: int) -> bytes: ...
    def stream(self, key: str, offset: int = 0, length: int = 0, chunk: int = ...) -> Iterator[bytes]: ...
    def delete(self, *keys: str) -> None: ...
    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...


class CheckedStore(ObjectStore, Protocol):
    """An ObjectStore as the conformance check sees it: the steps of
    `ensure_bucket` one by one (raising StorageRefused where it only warns),
    what the bucket holds of them, and object tags."""

    def apply_public_assets_policy(self) -> None: ...
    def bucket_policy(self) -> dict | None: ...
    def apply_lifecycle_rules(self) -> None: ...
    def lifecycle_rules(self) -> list[LifecycleRule]: ...
    def put_tags(self, key: str, tags: dict[str, str]) -> None: ...
    def get_tags(self, key: str) -> dict[str, str]: ...
