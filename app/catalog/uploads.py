"""Upload sessions: single PUT or resumable multipart, resume and abort.

A package at most `multipart_threshold_bytes` long is sent with one
presigned PUT. A larger one is sent in parts: the version is created with an
S3 multipart upload on its temp key, the client asks for presigned URLs of
the parts it still has to send (`presign_parts`), can ask which parts storage
holds (`upload_state`) to resume after a failure, and `assemble` joins the
parts when the upload is completed. Parts have a fixed size, chosen when the
version is created, so a resuming client knows each part's byte range.

Unfinished multipart uploads hold storage without being objects (listing the
bucket does not show them): `abort_stale_multipart_uploads` is the
housekeeping job that drops the ones no version can finish any more.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import TYPE_CHECKING

from app.platform.clock import iso, naive_utc, utcnow
from app.platform.config import MiB, Settings
from app.platform.errors import BadRequest, Conflict
from app.platform.jobs import Job
from app.platform.lifecycle import transition
from app.platform.models import Version, record_audit
from app.platform.models import VersionStatus as S
from app.platform.objectstore import UploadedPart
from app.platform.storage import TEMP, temp_key, upload_id_of_temp_key

if TYPE_CHECKING:  # annotations only: the services are built above this layer
    from app.services import Services

log = logging.getLogger(__name__)

MAX_PARTS = 10_000  # S3's limit on parts in one upload
MAX_PARTS_PER_REQUEST = 100  # presigned part URLs handed out per request

SINGLE, MULTIPART = "single", "multipart"


# -- planning ----------------------------------------------------------------------

def part_size_for(size: int, settings: Settings) -> int | None:
    """The part size of a `size`-byte upload, or None for a single PUT."""
    if size <= settings.multipart_threshold_bytes:
        return None
    part = settings.multipart_part_bytes
    if math.ceil(size / part) > MAX_PARTS:  # grow parts (in whole MiB) to fit S3's limit
        part = math.ceil(size / MAX_PARTS / MiB) * MiB
    return part


def part_count(size: int, part_size: int) -> int:
    return max(1, math.ceil(size / part_size))


def expected_part_size(size: int, part_size: int, number: int) -> int:
    """Every part is `part_size` long except the last, which holds the rest."""
    return min(part_size, size - (number - 1) * part_size)


def is_multipart(version: Version) -> bool:
    return bool(version.multipart_upload_id)


# -- starting -----------------------------------------------------------------------

def start(svc: Services, size: int, upload_id: str) -> dict:
    """Fields of a new version for its upload; starts the multipart upload
    on storage when the package is large. Storage goes first: if the row
    cannot be created, `discard` drops what was started, and a crash in
    between leaves an upload without a version, which the cleanup job drops."""
    part_size = part_size_for(size, svc.settings)
    if part_size is None:
        return {}
    mp_id = svc.storage.create_multipart(temp_key(upload_id))
    return {"multipart_upload_id": mp_id, "part_size": part_size}


def discard(svc: Services, upload_id: str, fields: dict) -> None:
    """Undo `start` for a version that was not created."""
    if fields.get("multipart_upload_id"):
        try:
            svc.storage.abort_multipart(temp_key(upload_id), fields["multipart_upload_id"])
        except Exception:  # the cleanup job gets it later
            log.warning("could not abort the multipart upload of %s", upload_id, exc_info=True)


def multipart_instructions(svc: Services, version: Version) -> dict:
    """How to send a multipart upload: the plan; URLs come from presign_parts."""
    size, part_size = version.declared_size, version.part_size
    return {
        "kind": MULTIPART,
        "size": size,
        "part_size": part_size,
        "part_count": part_count(size, part_size),
        "max_parts_per_request": MAX_PARTS_PER_REQUEST,
        # After this, an unfinished upload is abandoned and its parts dropped.
        "expires_at": iso(version.created_at + dt.timedelta(seconds=svc.settings.retention.temp_upload)),
    }


# -- while uploading ---------------------------------------------------------------

def require_uploading(version: Version) -> None:
    if version.status != S.UPLOADING:
        raise Conflict(f"version {version.version_code} is {version.status}, not uploading",
                       code="invalid_state", details={"status": version.status})


def _require_multipart(version: Version) -> None:
    require_uploading(version)
    if not is_multipart(version):
        raise Conflict("this version uploads with a single PUT, not in parts; get a fresh URL "
                       "from GET …/upload", code="not_multipart")


def presign_parts(svc: Services, version: Version, numbers: list[int]) -> dict:
    """Presigned PUT URLs for the given part numbers."""
    _require_multipart(version)
    count = part_count(version.declared_size, version.part_size)
    if not numbers or len(numbers) > MAX_PARTS_PER_REQUEST:
        raise BadRequest(f"ask for 1 to {MAX_PARTS_PER_REQUEST} parts at a time",
                         code="invalid_field", details={"field": "part_numbers"})
    bad = [n for n in numbers if not 1 <= n <= count]
    if bad:
        raise BadRequest(f"part number {bad[0]} is out of range: this upload has parts 1 to {count}",
                         code="invalid_field", details={"field": "part_numbers"})
    ttl = svc.settings.upload_url_ttl
    key = temp_key(version.upload_id)
    parts = [{"part_number": n,
              "url": svc.storage.presigned_part_put(key, version.multipart_upload_id, n, ttl),
              "method": "PUT",
              "headers": {},
              "size": expected_part_size(version.declared_size, version.part_size, n)}
             for n in sorted(set(numbers))]
    return {"parts": parts, "expires_at": iso(utcnow() + dt.timedelta(seconds=ttl))}


def _part_dict(p: UploadedPart) -> dict:
    return {"part_number": p.number, "size": p.size, "etag": p.etag,
            "last_modified": iso(naive_utc(p.last_modified)) if p.last_modified else None}


def multipart_state(svc: Services, version: Version) -> dict:
    """Where an unfinished multipart upload stands: the plan and the parts
    storage holds, so a client resumes with the parts still missing."""
    _require_multipart(version)
    state = multipart_instructions(svc, version)
    parts = svc.storage.list_parts(temp_key(version.upload_id), version.multipart_upload_id)
    if parts is None:
        raise Conflict("the multipart upload is no longer in storage (it was aborted or "
                       "completed); create the version again", code="upload_missing")
    state["parts"] = [_part_dict(p) for p in parts]
    state["uploaded_bytes"] = sum(p.size for p in parts)
    return state


# -- completing --------------------------------------------------------------------

class PartsMismatch(Exception):
    """The parts cannot make the declared package: the upload has failed."""


def assemble(svc: Services, version: Version) -> None:
    """Join a multipart upload's parts into the temp object. Idempotent: an
    upload that storage no longer holds was completed before (or aborted,
    which the caller's object check reports as `upload_missing`)."""
    if not is_multipart(version):
        return
    key, mp_id = temp_key(version.upload_id), version.multipart_upload_id
    parts = svc.storage.list_parts(key, mp_id)
    if parts is None:
        return
    size, part_size = version.declared_size, version.part_size
    count = part_count(size, part_size)
    by_number = {p.number: p for p in parts}
    extra = sorted(n for n in by_number if n > count)
    if extra:
        raise PartsMismatch(f"part {extra[0]} was uploaded but a {size}-byte package has only "
                            f"{count} parts of {part_size} bytes")
    for p in parts:
        want = expected_part_size(size, part_size, p.number)
        if p.size != want:
            raise PartsMismatch(f"part {p.number} is {p.size} bytes but must be {want} bytes "
                                f"(parts are {part_size} bytes, the last one holds the rest)")
    missing = [n for n in range(1, count + 1) if n not in by_number]
    if missing:
        raise Conflict(f"{len(missing)} of {count} parts are not uploaded yet (first missing: "
                       f"part {missing[0]}); upload them, then complete again",
                       code="upload_incomplete",
                       details={"missing_parts": missing[:MAX_PARTS_PER_REQUEST],
                                "missing_count": len(missing), "part_count": count})
    svc.storage.complete_multipart(key, mp_id, parts)


def abort_parts(svc: Services, version: Version) -> None:
    if is_multipart(version):
        svc.storage.abort_multipart(temp_key(version.upload_id), version.multipart_upload_id)


# -- aborting ------------------------------------------------------------------------

def abort(svc: Services, version: Version, actor: str) -> Version:
    """The developer gives up an unfinished upload: the version is abandoned
    (its version_code free again) and what was uploaded is dropped."""
    if version.status == S.ABANDONED:
        return version  # aborting twice is harmless
    require_uploading(version)
    if not transition(version, "abort", status_reason="upload aborted by the developer"):
        version = Version.get_by_id(version.id)
        if version.status != S.ABANDONED:
            raise Conflict(f"version {version.version_code} changed meanwhile; it is "
                           f"{version.status}", code="invalid_state", details={"status": version.status})
        return version
    abort_parts(svc, version)
    svc.storage.delete(temp_key(version.upload_id))
    record_audit(actor, "version.upload_aborted", "version", version.id,
                 version_code=version.version_code)
    return Version.get_by_id(version.id)


# -- housekeeping -----------------------------------------------------------------------

def abort_stale_multipart_uploads(svc: Services, now: dt.datetime) -> dict:
    """Abort unfinished multipart uploads under temp/ that no version will
    complete: its version is no longer uploading, is older than the temp
    retention, or does not exist (a crash between storage and the database,
    given the same retention from when the upload started)."""
    cutoff = now - dt.timedelta(seconds=svc.settings.retention.temp_upload)
    seen = aborted = 0
    for upload in list(svc.storage.list_multipart_uploads(f"{TEMP}/")):
        seen += 1
        upload_id = upload_id_of_temp_key(upload.key)
        version = Version.get_or_none(Version.upload_id == upload_id) if upload_id else None
        if version is None:
            started = naive_utc(upload.initiated)
            stale = started is None or started < cutoff
        else:
            stale = (version.status != S.UPLOADING or version.created_at < cutoff
                     or version.multipart_upload_id != upload.upload_id)
        if stale:
            svc.storage.abort_multipart(upload.key, upload.upload_id)
            aborted += 1
            log.info("aborted stale multipart upload of %s (%s)", upload.key,
                     version.status if version else "no version")
    return {"items": aborted, "aborted": aborted, "seen": seen}


# Unfinished multipart uploads that no version will complete any more.
JOBS = (Job("abort_stale_multipart_uploads", abort_stale_multipart_uploads, dt.timedelta(minutes=15)),)
