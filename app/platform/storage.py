"""Object storage: the one module that talks S3 (through the minio SDK).

`Storage` is the adapter of the ObjectStore port (app/platform/objectstore.py):
no other module imports the SDK or sees its errors. A refusal (an S3 error
that is not a busy server) leaves as `StorageRefused` with the provider's
code, status and message.

Every object key the appliance uses is built, and parsed, here, so the
bucket layout of the design contract lives in one place:

    packages/{developer_id}/{app_id}/{version_code}/package.mosis
    packages/{developer_id}/{app_id}/{version_code}/manifest.json
    assets/{app_id}/icons/{n}/icon-{32,64,128}.png
    assets/{app_id}/screenshots/{n}.png   (and {n}.webp when smaller)
    deltas/{developer_id}/{app_id}/{from_version_code}-{to_version_code}.patch
    temp/{upload_id}/package.mosis
    backups/db/mosis-{YYYYmmddTHHMMSSZ}.{sqlite3.gz|pgdump}
    health/canary-{host}-{pid}   (2 bytes, while the check that storage takes writes runs)
    conformance-check/{random}/…, assets/conformance-check/{random}/…   (while
        `flask --app app storage check` runs, app/platform/conformance.py)

Asset keys carry a number that is never reused within an app (see
app/catalog/assets.py), so an asset's URL always names the same bytes.

Every call is bounded in time (connect and read timeouts, few retries, and
none after a read timed out). Transport failures leave as 503
`storage_unavailable` whose message names no address. Under `watch` (the
API), calls are refused at once while storage stalls, and only a few run at
once, so a stalled storage never holds all of a process's threads.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urlparse, urlunparse

import urllib3
from minio.commonconfig import CopySource, Filter, Tags
from minio.datatypes import Part
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from minio.lifecycleconfig import AbortIncompleteMultipartUpload, Expiration, LifecycleConfig, Rule

from app.platform.config import Settings
from app.platform.errors import Unavailable
from app.platform.metrics import STORAGE_ERRORS
from app.platform.objectstore import LifecycleRule, MultipartUpload, ObjectInfo, StorageRefused, UploadedPart
from minio import Minio

log = logging.getLogger(__name__)

PACKAGES, ASSETS, TEMP, BACKUPS, DELTAS = "packages", "assets", "temp", "backups", "deltas"
# Written (2 bytes) and deleted again by the health check that storage takes
# writes, one key per process (writers of one key at once may be refused);
# it asks this many times before it takes a 5xx for a refusal.
CANARY_PREFIX = "health/canary-"
CANARY_ATTEMPTS = 3


def canary_key() -> str:
    return f"{CANARY_PREFIX}{socket.gethostname()}-{os.getpid()}"
PREFIXES = (PACKAGES, DELTAS, ASSETS, TEMP, BACKUPS)
CHUNK = 1024 * 1024
MISSING_CODES = {"NoSuchKey", "NoSuchObject", "NoSuchVersion", "NotFound"}
# Storage is there but busy: retried, never taken for a refusal.
TRANSIENT_CODES = {"ServiceUnavailable", "SlowDown", "InternalError"}


# -- key layout --------------------------------------------------------------

def package_dir(developer_id: str, app_id: str, version_code: int) -> str:
    return f"{PACKAGES}/{developer_id}/{app_id}/{int(version_code)}"


PACKAGE_FILE, MANIFEST_FILE = "package.mosis", "manifest.json"
VERSION_FILES = (PACKAGE_FILE, MANIFEST_FILE)  # the objects of a version under its package_dir


def package_key(developer_id: str, app_id: str, version_code: int) -> str:
    return f"{package_dir(developer_id, app_id, version_code)}/{PACKAGE_FILE}"


def manifest_key(developer_id: str, app_id: str, version_code: int) -> str:
    return f"{package_dir(developer_id, app_id, version_code)}/{MANIFEST_FILE}"


# Key patterns also go into nginx's configuration, which takes `^…$`: in
# Python they are used with fullmatch, so a trailing newline never passes.
PACKAGE_KEY_RE = re.compile(rf"^{PACKAGES}/([0-9a-f]{{32}})/([0-9a-f]{{32}})/([1-9][0-9]{{0,9}})/package\.mosis$")


def parse_package_key(key: str) -> tuple[str, str, int] | None:
    """(developer_id, app_id, version_code) of a package key, else None."""
    m = PACKAGE_KEY_RE.fullmatch(key)
    return (m.group(1), m.group(2), int(m.group(3))) if m else None


_UNDER_PACKAGE_DIR_RE = re.compile(rf"{PACKAGES}/([^/]*)/([^/]*)/([0-9]+)/(.*)", re.DOTALL)


def split_package_path(key: str) -> tuple[str, str, int, str] | None:
    """(developer_id, app_id, version_code, rest) of any key under a
    package_dir, `packages/{developer_id}/{app_id}/{version_code}/{rest}`, as
    housekeeping reads what it finds (ids unchecked, rest any path), else None."""
    m = _UNDER_PACKAGE_DIR_RE.fullmatch(key)
    return (m.group(1), m.group(2), int(m.group(3)), m.group(4)) if m else None


def delta_key(developer_id: str, app_id: str, from_version_code: int, to_version_code: int) -> str:
    """Where the patch from one version of an app to another is kept (docs/deltas.md)."""
    return f"{DELTAS}/{developer_id}/{app_id}/{int(from_version_code)}-{int(to_version_code)}.patch"


DELTA_KEY_RE = re.compile(rf"^{DELTAS}/([0-9a-f]{{32}})/([0-9a-f]{{32}})/([1-9][0-9]{{0,9}})-([1-9][0-9]{{0,9}})"
                          r"\.patch$")


def parse_delta_key(key: str) -> tuple[str, str, int, int] | None:
    """(developer_id, app_id, from_version_code, to_version_code) of a patch's key, else None."""
    m = DELTA_KEY_RE.fullmatch(key)
    return (m.group(1), m.group(2), int(m.group(3)), int(m.group(4))) if m else None


def temp_key(upload_id: str) -> str:
    return f"{TEMP}/{upload_id}/{PACKAGE_FILE}"


_UNDER_TEMP_DIR_RE = re.compile(rf"{TEMP}/([^/]*)/(.*)", re.DOTALL)


def split_temp_path(key: str) -> tuple[str, str] | None:
    """(upload_id, rest) of any key `temp/{upload_id}/{rest}`, else None."""
    m = _UNDER_TEMP_DIR_RE.fullmatch(key)
    return (m.group(1), m.group(2)) if m else None


# Every key temp_key makes for an upload id (new_id(): 32 hex digits).
TEMP_KEY_RE = re.compile(rf"^{TEMP}/[0-9a-f]{{32}}/package\.mosis$")


def backup_key(at: dt.datetime, extension: str) -> str:
    """A database backup's key; keys sort by time, oldest first."""
    return f"{BACKUPS}/db/mosis-{at.strftime('%Y%m%dT%H%M%SZ')}.{extension}"


def icon_key(app_id: str, number: int, size: int) -> str:
    return f"{ASSETS}/{app_id}/icons/{int(number)}/icon-{int(size)}.png"


def screenshot_key(app_id: str, number: int, ext: str = "png") -> str:
    return f"{ASSETS}/{app_id}/screenshots/{int(number)}.{ext}"


# Every key icon_key and screenshot_key can make, and nothing else.
ASSET_KEY_RE = re.compile(rf"^{ASSETS}/[0-9a-f]{{32}}/(icons/[1-9][0-9]{{0,18}}/icon-(32|64|128)\.png"
                          rf"|screenshots/[1-9][0-9]{{0,18}}\.(png|webp))$")
# What the asset sweep takes for an asset: ASSET_KEY_RE's shape, any number
# and icon size, so it also removes (and counts past) hand-made ones.
_ASSET_SHAPE_RE = re.compile(rf"{ASSETS}/(?P<app>[0-9a-f]{{32}})/(?:icons/(?P<icon>\d+)/icon-\d+\.png"
                             r"|screenshots/(?P<shot>\d+)\.(?:png|webp))")


@dataclass(frozen=True)
class AssetKey:
    app_id: str
    kind: str  # icon, screenshot
    number: int


def parse_asset_key(key: str) -> AssetKey | None:
    """The app, kind and number of an asset's key (as the sweep reads them), else None."""
    m = _ASSET_SHAPE_RE.fullmatch(key)
    if m is None:
        return None
    return AssetKey(m["app"], "icon" if m["icon"] else "screenshot", int(m["icon"] or m["shot"]))


def upload_id_of_temp_key(key: str) -> str | None:
    """The upload id in `temp/{upload_id}/package.mosis`, or None for other keys."""
    found = split_temp_path(key)
    return found[0] if found and found[1] == PACKAGE_FILE else None


# A safety net only: S3 expiry counts whole days, so the retention job (and,
# for parts, the multipart cleanup) is what removes abandoned uploads after an
# hour (docs/retention.md). The same rule as minio/lifecycle.json.
TEMP_LIFECYCLE = LifecycleRule("temp-expiry", True, f"{TEMP}/", expire_days=1, abort_multipart_days=1)
LIFECYCLE_RULES = (TEMP_LIFECYCLE,)


def _sdk_rule(rule: LifecycleRule) -> Rule:
    abort = rule.abort_multipart_days
    return Rule("Enabled" if rule.enabled else "Disabled", rule_filter=Filter(prefix=rule.prefix),
                rule_id=rule.rule_id,
                expiration=Expiration(days=rule.expire_days) if rule.expire_days is not None else None,
                abort_incomplete_multipart_upload=(AbortIncompleteMultipartUpload(days_after_initiation=abort)
                                                   if abort is not None else None))


def _rule_of(rule: Rule) -> LifecycleRule:
    f = rule.rule_filter
    prefix = f.prefix if f is not None and f.prefix is not None else (
        f.and_operator.prefix if f is not None and f.and_operator is not None else None)
    abort = rule.abort_incomplete_multipart_upload
    return LifecycleRule(rule.rule_id or "", rule.status == "Enabled", prefix or "",
                         rule.expiration.days if rule.expiration is not None else None,
                         abort.days_after_initiation if abort is not None else None)


# -- the client ----------------------------------------------------------------

def _endpoint(url: str) -> tuple[str, bool]:
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if parsed.path not in ("", "/"):
        raise ValueError(f"an S3 endpoint cannot carry a path: {url!r}")
    return parsed.netloc, parsed.scheme == "https"


def _http_client(settings: Settings, timeout: float | None = None) -> urllib3.PoolManager:
    """Connections to storage, every call bounded in time: a stalled server
    costs a request seconds, not minutes. Refused connections and 5xx
    answers are retried (a few times, quickly); a read that timed out is
    not: the server took the request and did not answer, so asking again
    only doubles the wait. `timeout` (health checks): that bound for
    everything, and no retry."""
    ca_file = settings.s3_ca_file
    tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca_file} if ca_file and os.path.isfile(ca_file) else {}
    if timeout is not None:
        bounds, retries = urllib3.Timeout(connect=timeout, read=timeout), urllib3.Retry(0, read=0)
    else:
        n = settings.s3_retries
        bounds = urllib3.Timeout(connect=settings.s3_connect_timeout, read=settings.s3_read_timeout)
        retries = urllib3.Retry(total=n, connect=n, read=0, status=n, other=0, backoff_factor=0.2,
                                status_forcelist=(500, 502, 503, 504))
    return urllib3.PoolManager(timeout=bounds, retries=retries, maxsize=16, **tls)


def _client(endpoint: str, settings: Settings, http_client=None) -> Minio:
    host, secure = _endpoint(endpoint)
    # The region given: presigning needs no network call to ask for it.
    client = Minio(host, secure=secure, http_client=http_client, access_key=settings.s3_access_key,
                   secret_key=settings.s3_secret_key, region=settings.s3_region)
    # Path-style (`host/bucket/key`) everywhere, AWS S3 included: the edge
    # routes by the bucket in the path and sends one Host to storage.
    client.disable_virtual_style_endpoint()
    return client


def signed_host(settings: Settings) -> str:
    """The Host storage URLs are signed for: what the edge must send to storage
    with the app's presigned URLs (the SDK's own reading of MOSIS_S3_ENDPOINT)."""
    url = _client(settings.s3_endpoint, settings).presigned_get_object(
        bucket_name=settings.bucket, object_name="x", expires=dt.timedelta(seconds=60))
    return urlparse(url).netloc


def assets_public_policy(bucket: str) -> dict:
    """Anonymous reads of assets only: everything else needs a signature.

    packages/ stays private: the edge fetches a package with a URL the app
    presigns on each cache miss (docs/edge.md), so no anonymous read is needed.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": ["*"]},
            "Action": ["s3:GetObject"],
            "Resource": [f"arn:aws:s3:::{bucket}/{ASSETS}/*"],
        }],
    }


class Storage:
    """The ObjectStore (app/platform/objectstore.py) over the minio SDK."""

    def __init__(self, settings: Settings):
        self.bucket = settings.bucket
        self.public_assets = settings.s3_public_assets
        self.settings = settings
        self.client = _client(settings.s3_endpoint, settings, _http_client(settings))
        self._probe_clients: dict[float, Minio] = {}
        # Set by `watch` (the API): calls fail at once while the probe says
        # storage does not answer, and only so many run at once.
        self.reachability = None
        self._stalled_after = 0.0
        self._slots: threading.BoundedSemaphore | None = None
        pub_host, pub_secure = _endpoint(settings.resolved_s3_public_endpoint)
        self._public_origin = ("https" if pub_secure else "http", pub_host)

    # -- setup ---------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket, its access policy and lifecycle rules if missing.

        A bucket made by hand is fine, and so is a provider that refuses the
        policy or the lifecycle rules (hosted S3 often does): that is logged
        with what to set up by hand. Credentials storage refuses, or a bucket
        that is missing and cannot be made, stop the start (StorageSetupError).
        """
        with self._guard("create the bucket"):
            try:
                exists = self.client.bucket_exists(bucket_name=self.bucket)
            except S3Error as e:
                if e.code in TRANSIENT_CODES:
                    raise
                raise StorageSetupError(
                    f"storage refuses the credentials (MOSIS_S3_ACCESS_KEY / MOSIS_S3_SECRET_KEY) for bucket "
                    f"{self.bucket!r}: {e.code}. The key needs to list, read, write and delete objects "
                    f"in the bucket") from e
            if not exists:
                try:
                    self.client.make_bucket(bucket_name=self.bucket)
                except S3Error as e:
                    if e.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise StorageSetupError(
                            f"bucket {self.bucket!r} does not exist and storage refuses to create it "
                            f"({e.code}): create it by hand (docs/deploy.md, Using another S3 server)") from e
        if self.public_assets:
            self._ensure_public_assets()
        self._ensure_lifecycle()

    def _ensure_public_assets(self) -> None:
        try:
            self.apply_public_assets_policy()
        except (StorageRefused, Unavailable) as e:
            log.warning("storage refuses the bucket policy (%s): make assets/ of bucket %s anonymously "
                        "readable by hand, or set MOSIS_S3_PUBLIC_ASSETS=false so the edge fetches assets "
                        "with presigned URLs (docs/deploy.md)", getattr(e, "code", e), self.bucket)

    def _ensure_lifecycle(self) -> None:
        try:
            self.apply_lifecycle_rules()
        except (StorageRefused, Unavailable) as e:
            # Only a safety net: the retention job removes abandoned uploads.
            log.warning("storage refuses lifecycle rules (%s): add one by hand to bucket %s that expires "
                        "objects under temp/ after 1 day and aborts incomplete multipart uploads after "
                        "1 day (docs/retention.md)", getattr(e, "code", e), self.bucket)

    def apply_public_assets_policy(self) -> None:
        """Let anyone read assets/ (the edge fetches them without a signature)."""
        with self._guard("set the bucket policy"):
            self.client.set_bucket_policy(bucket_name=self.bucket,
                                          policy=json.dumps(assets_public_policy(self.bucket)))

    def bucket_policy(self) -> dict | None:
        """The bucket policy as storage keeps it; None if it has none."""
        with self._guard("read the bucket policy"):
            try:
                text = self.client.get_bucket_policy(bucket_name=self.bucket)
            except S3Error as e:
                if e.code == "NoSuchBucketPolicy":
                    return None
                raise
        return json.loads(text) if text else None

    def apply_lifecycle_rules(self) -> None:
        """Set the appliance's lifecycle rules, keeping rules an operator added."""
        with self._guard("set lifecycle rules"):
            current = self.client.get_bucket_lifecycle(bucket_name=self.bucket)
            ours = {r.rule_id for r in LIFECYCLE_RULES}
            kept = [r for r in (current.rules if current else []) if r.rule_id not in ours]
            self.client.set_bucket_lifecycle(bucket_name=self.bucket, config=LifecycleConfig(
                kept + [_sdk_rule(r) for r in LIFECYCLE_RULES]))

    def lifecycle_rules(self) -> list[LifecycleRule]:
        """The bucket's lifecycle rules as storage keeps them (empty if none)."""
        with self._guard("read lifecycle rules"):
            config = self.client.get_bucket_lifecycle(bucket_name=self.bucket)
        return [_rule_of(r) for r in config.rules] if config else []

    def reset_connections(self) -> None:
        """Drop pooled connections (after fork they belong to the parent)."""
        self.client._http.clear()

    def ping(self) -> None:
        with self._guard("reach storage"):
            self.client.bucket_exists(bucket_name=self.bucket)

    # -- health ------------------------------------------------------------------

    def watch(self, reachability, slots: int, stalled_after: float) -> None:
        """From now on, fail calls at once while `reachability` (an
        app.platform.health.Probe of check_reachable) has had no answer from storage
        for `stalled_after` seconds, and make at most `slots` calls at once
        (a call waits for a free slot as long as for a connection): a
        stalled storage holds at most that many of the process's threads."""
        self.reachability = reachability
        self._stalled_after = stalled_after
        self._slots = threading.BoundedSemaphore(slots)

    def _probe_client(self, timeout: float) -> Minio:
        client = self._probe_clients.get(timeout)
        if client is None:
            client = self._probe_clients[timeout] = _client(self.settings.s3_endpoint, self.settings,
                                                            _http_client(self.settings, timeout))
        return client

    def check_reachable(self, timeout: float) -> None:
        """Raise Unavailable unless storage answers for the bucket within
        `timeout` seconds (its own connections: never queued behind calls)."""
        with _StorageGuard("reach storage"):
            if not self._probe_client(timeout).bucket_exists(bucket_name=self.bucket):
                raise Unavailable(f"bucket {self.bucket!r} does not exist", code="storage_unavailable")

    def check_writable(self, timeout: float) -> None:
        """Raise Unavailable unless storage stores a small object (this
        process's canary, deleted again) within `timeout` seconds: reachable
        storage may still refuse writes (a full disk)."""
        client, key = self._probe_client(timeout), canary_key()
        with _StorageGuard("write the health canary"):
            for attempt in range(CANARY_ATTEMPTS):
                try:
                    client.put_object(bucket_name=self.bucket, object_name=key, data=io.BytesIO(b"ok"),
                                      length=2, content_type="text/plain")
                    break
                except S3Error as e:
                    # A busy server's odd 5xx is not a refusal: asked again, it takes the write.
                    if attempt + 1 == CANARY_ATTEMPTS or e.code not in TRANSIENT_CODES:
                        raise Unavailable(f"storage refuses writes ({e.code})", code="storage_unavailable") from e
                    time.sleep(0.2 * (attempt + 1))
            with contextlib.suppress(S3Error):  # a canary left over costs 2 bytes
                client.remove_object(bucket_name=self.bucket, object_name=key)

    # -- presigned URLs ------------------------------------------------------

    # Uploads are signed for storage's own host and handed out at the public
    # endpoint (the edge), which relays them with that Host: a hosted
    # provider checks the host it is addressed by (docs/edge.md).

    def _at_public_endpoint(self, url: str) -> str:
        scheme, netloc = self._public_origin
        return urlunparse(urlparse(url)._replace(scheme=scheme, netloc=netloc))

    def presigned_put(self, key: str, ttl: int, *, internal: bool = False) -> str:
        url = self.client.presigned_put_object(bucket_name=self.bucket, object_name=key,
                                               expires=dt.timedelta(seconds=ttl))
        return url if internal else self._at_public_endpoint(url)

    def presigned_get(self, key: str, ttl: int, *, internal: bool = False,
                      response_headers: dict[str, str] | None = None) -> str:
        """A GET URL for the edge, which reaches storage at the app's own
        endpoint (internal), or the same handed out at the public endpoint.
        `response_headers` (`response-content-type`, …) are signed into it:
        storage answers with them."""
        url = self.client.presigned_get_object(bucket_name=self.bucket, object_name=key,
                                               expires=dt.timedelta(seconds=ttl),
                                               response_headers=response_headers)
        return url if internal else self._at_public_endpoint(url)

    def presigned_part_put(self, key: str, upload_id: str, part_number: int, ttl: int, *,
                           internal: bool = False) -> str:
        """A URL to PUT one part of a multipart upload (UploadPart) to."""
        url = self.client.get_presigned_url(
            "PUT", self.bucket, key, expires=dt.timedelta(seconds=ttl),
            extra_query_params={"uploadId": upload_id, "partNumber": str(int(part_number))})
        return url if internal else self._at_public_endpoint(url)

    # -- multipart uploads ---------------------------------------------------------
    # The SDK exposes the multipart calls only as its internal `_` methods
    # (its public API hides them inside put_object); they are the plain S3
    # operations, pinned by the minio version range in pyproject.toml.

    def create_multipart(self, key: str) -> str:
        """Start a multipart upload of `key`; return storage's upload id."""
        with self._guard("start a multipart upload"):
            return self.client._create_multipart_upload(
                self.bucket, key, {"Content-Type": "application/octet-stream"})

    def list_parts(self, key: str, upload_id: str) -> list[UploadedPart] | None:
        """The parts uploaded so far, by number; None if the upload is gone
        (completed or aborted)."""
        parts: list[UploadedPart] = []
        marker = None
        with self._guard("list uploaded parts"):
            while True:
                try:
                    page = self.client._list_parts(self.bucket, key, upload_id,
                                                   part_number_marker=marker)
                except S3Error as e:
                    if e.code == "NoSuchUpload":
                        return None
                    raise
                parts.extend(UploadedPart(p.part_number, p.size or 0, p.etag, p.last_modified)
                             for p in page.parts)
                if not page.is_truncated or not page.next_part_number_marker:
                    break
                marker = page.next_part_number_marker
        return sorted(parts, key=lambda p: p.number)

    def complete_multipart(self, key: str, upload_id: str, parts: list[UploadedPart]) -> bool:
        """Join the parts into the object; False if the upload is gone already."""
        with self._guard("complete a multipart upload"):
            try:
                self.client._complete_multipart_upload(
                    self.bucket, key, upload_id, [Part(p.number, p.etag) for p in parts])
            except S3Error as e:
                if e.code == "NoSuchUpload":
                    return False
                raise
        return True

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop an unfinished upload and its parts; a gone upload is not an error."""
        with self._guard("abort a multipart upload"):
            try:
                self.client._abort_multipart_upload(self.bucket, key, upload_id)
            except S3Error as e:
                if e.code != "NoSuchUpload":
                    raise

    def list_multipart_uploads(self, prefix: str) -> Iterator[MultipartUpload]:
        """Unfinished multipart uploads of keys under `prefix`."""
        key_marker = upload_marker = None
        with self._guard("list multipart uploads"):
            while True:
                page = self.client._list_multipart_uploads(
                    self.bucket, prefix=prefix, key_marker=key_marker, upload_id_marker=upload_marker)
                for u in page.uploads:
                    yield MultipartUpload(u.object_name, u.upload_id or "", u.initiated_time)
                if not page.is_truncated or not page.uploads:
                    return
                # The SDK drops NextUploadIdMarker; the last entry is the same marker.
                key_marker, upload_marker = page.uploads[-1].object_name, page.uploads[-1].upload_id

    # -- objects ---------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo | None:
        with self._guard("read object metadata"):
            try:
                st = self.client.stat_object(bucket_name=self.bucket, object_name=key)
            except S3Error as e:
                if e.code in MISSING_CODES:
                    return None
                raise
        encoding = (st.metadata or {}).get("Content-Encoding") or None
        return ObjectInfo(key, st.size, (st.etag or "").strip('"'), st.last_modified, st.content_type,
                          encoding)

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def copy(self, src: str, dst: str) -> None:
        """Server-side copy: the bytes never pass through the app."""
        with self._guard("copy an object"):
            self.client.copy_object(bucket_name=self.bucket, object_name=dst,
                                    source=CopySource(bucket_name=self.bucket, object_name=src))

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream",
            cache_control: str | None = None) -> None:
        headers = {"Cache-Control": cache_control} if cache_control else None
        with self._guard("write an object"):
            self.client.put_object(bucket_name=self.bucket, object_name=key, data=io.BytesIO(data),
                                   length=len(data), content_type=content_type, metadata=headers)

    def put_file(self, key: str, path, content_type: str = "application/octet-stream") -> None:
        """Upload a local file (streamed, multipart when large)."""
        with self._guard("write an object"):
            self.client.fput_object(bucket_name=self.bucket, object_name=key, file_path=str(path),
                                    content_type=content_type)

    def put_stream(self, key: str, chunks: Iterator[bytes], length: int,
                   content_type: str = "application/octet-stream", cache_control: str | None = None) -> None:
        """Write `length` bytes read from `chunks` (e.g. another store's
        `stream`); memory stays at about one part."""
        headers = {"Cache-Control": cache_control} if cache_control else None
        with self._guard("write an object"):
            self.client.put_object(bucket_name=self.bucket, object_name=key, data=_ChunkReader(chunks),
                                   length=length, content_type=content_type, metadata=headers)

    def get_file(self, key: str, path) -> None:
        """Download an object into a local file."""
        with self._guard("read an object"):
            self.client.fget_object(bucket_name=self.bucket, object_name=key, file_path=str(path))

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """`length` bytes from `offset` (fewer at the end of the object)."""
        if length <= 0:
            return b""
        return b"".join(self.stream(key, offset=offset, length=length))

    def stream(self, key: str, offset: int = 0, length: int = 0, chunk: int = CHUNK) -> Iterator[bytes]:
        """Yield the object's bytes in chunks, exactly as stored (never
        decoded by a Content-Encoding it was stored with); memory stays at
        one chunk."""
        with self._guard("read an object"):
            resp = self.client.get_object(bucket_name=self.bucket, object_name=key,
                                          offset=offset, length=length)
        try:
            with self._guard("read an object"):
                yield from resp.stream(chunk, decode_content=False)
        finally:
            resp.close()
            resp.release_conn()

    def delete(self, *keys: str) -> None:
        """Delete objects; deleting one that is already gone is not an error."""
        if not keys:
            return
        with self._guard("delete objects"):
            errors = list(self.client.remove_objects(
                bucket_name=self.bucket, delete_object_list=[DeleteObject(k) for k in keys]))
        failed = [e for e in errors if e.code not in MISSING_CODES]
        if failed:
            raise Unavailable(f"storage refused to delete {failed[0].name}: {failed[0].message}",
                              code="storage_unavailable")

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._guard("list objects"):
            for o in self.client.list_objects(bucket_name=self.bucket, prefix=prefix, recursive=True):
                if not o.is_dir:
                    yield ObjectInfo(o.object_name, o.size or 0, (o.etag or "").strip('"'), o.last_modified)

    def put_tags(self, key: str, tags: dict[str, str]) -> None:
        """Replace an object's tags."""
        sdk_tags = Tags.new_object_tags()
        for name, value in tags.items():
            sdk_tags[name] = value
        with self._guard("tag an object"):
            self.client.set_object_tags(bucket_name=self.bucket, object_name=key, tags=sdk_tags)

    def get_tags(self, key: str) -> dict[str, str]:
        with self._guard("read an object's tags"):
            return dict(self.client.get_object_tags(bucket_name=self.bucket, object_name=key) or {})

    def _guard(self, doing: str):
        return _StorageGuard(doing, self)


class _ChunkReader:
    """A file-like `read(n)` over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks, self._buffer = iter(chunks), bytearray()

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        size = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out


class StorageStalled(Unavailable):
    """Storage took the request and did not answer in time."""

    stalled = True


def _timed_out(exc: BaseException) -> bool:
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # refused (a ConnectTimeoutError by descent)
        return False
    reason = getattr(exc, "reason", None)  # MaxRetryError: the last attempt's error
    return isinstance(exc, (urllib3.exceptions.TimeoutError, TimeoutError)) or (
        reason is not None and _timed_out(reason))


class ObjectUnreadable(Exception):
    """Storage answers, but an object's bytes cannot be read as they are
    stored (e.g. stored with a Content-Encoding that does not decode)."""


class StorageSetupError(RuntimeError):
    """Storage refuses what the appliance cannot run without (its credentials, its bucket)."""


class _StorageGuard:
    """Turn transport failures into 503 `storage_unavailable`, once, with
    context: what the client sees names no address (the log has the detail).
    Under `Storage.watch`, refuse at once while storage does not answer, and
    hold one of the call slots for the call."""

    def __init__(self, doing: str, storage: Storage | None = None):
        self.doing = doing
        self.storage = storage
        self._slot = None

    def __enter__(self):
        storage = self.storage
        if storage is None:
            return self
        probe = storage.reachability
        stalled = probe.stalled(storage._stalled_after) if probe is not None else None
        if stalled:
            STORAGE_ERRORS.labels(self.doing).inc()
            raise Unavailable(f"storage is not answering (could not {self.doing}); retry shortly",
                              code="storage_unavailable")
        if storage._slots is not None:
            if not storage._slots.acquire(timeout=storage.settings.s3_connect_timeout):
                STORAGE_ERRORS.labels(self.doing).inc()
                raise Unavailable(f"storage is slow to answer (could not {self.doing}); retry shortly",
                                  code="storage_unavailable")
            self._slot = storage._slots
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._slot is not None:
            self._slot.release()
            self._slot = None
        if exc is None or isinstance(exc, Unavailable):
            return False
        if isinstance(exc, urllib3.exceptions.DecodeError):
            raise ObjectUnreadable(f"the object cannot be read as stored: {exc}") from exc
        if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
            STORAGE_ERRORS.labels(self.doing).inc()
            if self.storage is not None:  # a health check logs when its outcome changes, not each time
                log.warning("storage call failed (%s): %s", self.doing, exc)
            if _timed_out(exc):
                raise StorageStalled(f"storage did not answer in time (could not {self.doing}); retry "
                                     "shortly", code="storage_unavailable") from exc
            raise Unavailable(f"storage is unreachable (could not {self.doing}); retry shortly",
                              code="storage_unavailable") from exc
        if isinstance(exc, S3Error) and exc.code in TRANSIENT_CODES:
            STORAGE_ERRORS.labels(self.doing).inc()
            raise Unavailable(f"storage is unavailable (could not {self.doing}): {exc.code}",
                              code="storage_unavailable") from exc
        if isinstance(exc, S3Error):  # a refusal: the provider's words, no SDK type beyond this module
            response = getattr(exc, "response", None)
            status = response.status if response is not None else None
            raise StorageRefused(exc.code or "", status, exc.message or "") from exc
        return False
