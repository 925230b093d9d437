"""The storage conformance check: what the appliance relies on an S3 provider for, asked of it.

Each check is a plain function `check(store, prefix, web) -> Outcome`: it
asks storage through the adapter (app/platform/objectstore.py) and, for
presigned and anonymous requests, over plain HTTP as the edge and clients
do, and returns pass, fail or skip with the provider's own answer (HTTP
status, error code, message). `run` runs them all against one bucket
(`flask --app app storage check`, docs/deploy.md).

Invariants:
- a check writes only under its throw-away prefix (`conformance-check/<random>/`)
  and the same prefix under `assets/` (anonymous reads are allowed there only);
  `run` removes every object under both and aborts every multipart upload
  under them afterwards, whatever the checks did, and reports what it could
  not remove;
- bucket settings are changed only as the app changes them at every start
  (`Storage.ensure_bucket`): the assets policy when MOSIS_S3_PUBLIC_ASSETS is
  on, the `temp/` lifecycle rule beside an operator's rules;
- `required` marks a check whose failure breaks the appliance on that
  provider; an advisory one costs a safety net or a nicety (docs/deploy.md).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from app.platform.config import Settings
from app.platform.errors import Unavailable
from app.platform.objectstore import CheckedStore, StorageRefused
from app.platform.storage import ASSETS, TEMP_LIFECYCLE

PREFIX_ROOT = "conformance-check"
PART_BYTES = 5 * 1024 * 1024  # S3's smallest part but the last
URL_TTL = 300
EXPIRY_WAIT = 12.0  # seconds a one-second URL may take to be refused (clocks tick in seconds)
SAMPLE = hashlib.sha256(b"mosis conformance").digest() * 64  # 2 KiB, not all one byte


def new_prefix() -> str:
    return f"{PREFIX_ROOT}/{uuid.uuid4().hex}/"


@dataclass(frozen=True)
class Outcome:
    status: str  # pass, fail, skip
    answer: str  # what the provider said (or why the check did not apply)


def passed(answer: str) -> Outcome:
    return Outcome("pass", answer)


def failed(answer: str) -> Outcome:
    return Outcome("fail", answer)


def skipped(answer: str) -> Outcome:
    return Outcome("skip", answer)


class Failed(Exception):
    """A step of a check got an answer the appliance cannot work with."""


# -- talking to storage ----------------------------------------------------------------------


class Web:
    """Plain HTTP to storage, as clients and the edge send presigned and anonymous requests."""

    def __init__(self, ca_file: str | None = None, timeout: float = 30.0):
        self.session = requests.Session()
        self.session.verify = ca_file if ca_file and os.path.isfile(ca_file) else True
        self.timeout = timeout

    @classmethod
    def for_settings(cls, settings: Settings) -> Web:
        return cls(settings.s3_ca_file, settings.s3_read_timeout)

    def send(self, method: str, url: str, data: bytes | None = None) -> requests.Response:
        try:
            return self.session.request(method, url, data=data, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as e:
            raise Failed(f"{method} did not get an answer: {type(e).__name__}") from e

    def close(self) -> None:
        self.session.close()


def said(reply: requests.Response) -> str:
    """An HTTP answer as the provider gave it: status, and its S3 error code and message if any."""
    text = f"HTTP {reply.status_code}"
    if reply.status_code < 300 or not reply.content:
        return text
    try:
        root = ET.fromstring(reply.content)
    except ET.ParseError:
        return f"{text} {reply.content[:80]!r}"
    found = {el.tag.rsplit("}", 1)[-1]: (el.text or "") for el in root}
    code, message = found.get("Code", ""), found.get("Message", "")
    return f"{text} {code}: {message}" if code and message else " ".join(p for p in (text, code, message) if p)


def ask(step: str, call: Callable, *args, **kwargs):
    """Call the adapter; a refusal or no answer fails the check, naming the step."""
    try:
        return call(*args, **kwargs)
    except StorageRefused as e:
        raise Failed(f"{step}: HTTP {e.status or '?'} {e.code}: {e.message}") from e
    except Unavailable as e:
        raise Failed(f"{step}: {e.message}") from e


def _expect_ok(step: str, reply: requests.Response) -> requests.Response:
    if reply.status_code >= 300:
        raise Failed(f"{step}: {said(reply)}")
    return reply


def _anonymous_url(store: CheckedStore, key: str) -> str:
    """The key's URL with no signature (path-style, as the edge asks storage)."""
    return store.presigned_get(key, URL_TTL, internal=True).split("?", 1)[0]


def _put(store: CheckedStore, key: str, data: bytes = SAMPLE, content_type: str = "text/plain") -> None:
    ask("put", store.put, key, data, content_type)


# -- the checks ------------------------------------------------------------------------------


def objects(store: CheckedStore, prefix: str, web: Web) -> Outcome:
    key = f"{prefix}objects/sample.txt"
    _put(store, key)
    info = ask("stat", store.stat, key)
    if info is None or info.size != len(SAMPLE):
        return failed(f"stat after put: {info}")
    listed = [o.key for o in ask("list", lambda: list(store.list(prefix + "objects/")))]
    if listed != [key]:
        return failed(f"list of the prefix: {listed}")
    if ask("ranged read", store.read_range, key, 100, 50) != SAMPLE[100:150]:
        return failed("a ranged read returned other bytes")
    return passed(f"put {len(SAMPLE)} bytes, stat, list and a ranged read agree")


def presigned_put(store: CheckedStore, prefix: str, web: Web) -> Outcome:
    key = f"{prefix}presigned/put.bin"
    reply = _expect_ok("PUT", web.send("PUT", store.presigned_put(key, URL_TTL, internal=True), SAMPLE))
    info = ask("stat", store.stat, key)
    if info is None or info.size != len(SAMPLE):
        return failed(f"{said(reply)}, but storage holds {info}")
    return passed(f"{said(reply)}; {info.size} bytes stored")


def presigned_get(store: CheckedStore, prefix: str, web: Web) -> Outcome:
    key = f"{prefix}presigned/get.bin"
    _put(store, key)
    reply = _expect_ok("GET", web.send("GET", store.presigned_get(key, URL_TTL, internal=True)))
    if reply.content != SAMPLE:
        return failed(f"{said(reply)} with {len(reply.content)} other bytes")
    return passed(f"{said(reply)}, the {len(SAMPLE)} bytes stored")


# What the app signs into a package's URL for the edge (app/api/edge.py).
RESPONSE_HEADERS = {"response-content-type": "application/octet-stream",
                    "response-content-disposition": 'attachment; filename="check.mosis"'}


def response_headers(store: CheckedStore, prefix: str, web: Web) -> Outcome:
    key = f"{prefix}presigned/headers.bin"
    _put(store, key)
    url = store.presigned_get(key, URL_TTL, internal=True, response_headers=RESPONSE_HEADERS)
    reply = _expect_ok("GET", web.send("GET", url))
    got = {"content-type": reply.headers.get("Content-Type"),
           "content-disposition": reply.headers.get("Content-Disposition")}
    wanted = {name.removeprefix("response-"): value for name, value in RESPONSE_HEADERS.items()}
    answer = f"{said(reply)}, Content-Type: {got['content-type']}, Content-Disposition: {got['content-disposition']}"
    return passed(answer) if got == wanted else failed(answer)


def presigned_expiry(store: CheckedStore, prefix: str, web: Web) -> Outcome:
    key = f"{prefix}presigned/expiry.bin"
    _put(store, key)
    get_url = store.presigned_get(key, 1, internal=True)
    put_url = store.presigned_put(key, 1, internal=True)
    deadline = time.monotonic() + EXPIRY_WAIT
    time.sleep(2.0)
    while True:
        reply = web.send("GET", get_url)
        if reply.status_code >= 400 or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    if reply.status_code < 400:
        return failed(f"a GET URL signed for 1 s still answers after {EXPIRY_WAIT:.0f} s: {said(reply)}")
    put_reply = web.send("PUT", put_url, b"late")
    answer = f"GET {said(reply)}; PUT {said(put_reply)}"
    info = ask("stat", store.stat, key)
    if put_reply.status_code < 400 or info is None or info.size != len(SAMPLE):
        return failed(answer)
    return passed(answer)


def tampered_signature(store: CheckedStore, prefix: str, web: Web) -> Outcome:
    key = f"{prefix}presigned/tampered.bin"
    _put(store, key)
    parts = urlsplit(store.presigned_get(key, URL_TTL, internal=True))
    query = parse_qsl(parts.query, keep_blank_values=True)
    signature = dict(query).get("X-Amz-Signature", "")
    if not signature:
        return failed("the presigned URL carries no X-Amz-Signature")
    changed = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    query = [(k, changed if k == "X-Amz-Signature" else v) for k, v in query]
    reply = web.send("GET", urlunsplit(parts._replace(query=urlencode(query))))
    refused = reply.status_code in (401, 403) and reply.content != SAMPLE
    return (passed if refused else failed)(said(reply))


def bucket_policy(store: CheckedStore, prefix: str, web: Web) -> Outcome:
    if not store.public_assets:
        return skipped("MOSIS_S3_PUBLIC_ASSETS=false: the app sets no policy, the edge signs asset requests")
    ask("set the assets policy", store.apply_public_assets_policy)
    try:
        policy = store.bucket_policy()
    except (StorageRefused, Unavailable) as e:  # setting it is what counts; reading back is a courtesy
        return passed(f"accepted; reading it back: {getattr(e, 'message', e)}")
    statements = [f"{s.get('Effect')} {', '.join(_listed(s.get('Action')))} on {', '.join(_listed(s.get('Resource')))}"
                  for s in (policy or {}).get("Statement", [])]
    return passed(f"accepted; reads back: {'; '.join(statements) or 'no statement'}")


def _listed(value) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)] if value else []


def anonymous_read_assets(store: CheckedStore, prefix: str, web: Web) -> Outcome:
    if not store.public_assets:
        return skipped("MOSIS_S3_PUBLIC_ASSETS=false: the edge fetches assets with presigned URLs")
    key = f"{ASSETS}/{prefix}icon.txt"
    _put(store, key)
    reply = web.send("GET", _anonymous_url(store, key))
    ok = reply.status_code == 200 and reply.content == SAMPLE
    return (passed if ok else failed)(f"unsigned GET of {ASSETS}/…: {said(reply)}")


def anonymous_read_elsewhere(store: CheckedStore, prefix: str, web: Web) -> Outcome:
    key = f"{prefix}private.txt"
    _put(store, key)
    reply = web.send("GET", _anonymous_url(store, key))
    refused = reply.status_code >= 400 and reply.content != SAMPLE
    return (passed if refused else failed)(f"unsigned GET outside {ASSETS}/: {said(reply)}")


def server_side_copy(store: CheckedStore, prefix: str, web: Web) -> Outcome:
    src, dst = f"{prefix}copy/from.bin", f"{prefix}copy/to.bin"
    _put(store, src)
    ask("copy", store.copy, src, dst)
    if ask("read the copy", store.read_range, dst, 0, len(SAMPLE) + 1) != SAMPLE:
        return failed("the copy holds other bytes")
    return passed(f"copied {len(SAMPLE)} bytes within the bucket")


def multipart(store: CheckedStore, prefix: str, web: Web) -> Outcome:
    key, dropped = f"{prefix}multipart/joined.bin", f"{prefix}multipart/aborted.bin"
    first = (SAMPLE * (PART_BYTES // len(SAMPLE) + 1))[:PART_BYTES]
    started: list[tuple[str, str]] = []
    try:
        upload_id = ask("create", store.create_multipart, key)
        started.append((key, upload_id))
        for number, data in ((1, first), (2, SAMPLE)):
            url = store.presigned_part_put(key, upload_id, number, URL_TTL, internal=True)
            _expect_ok(f"presigned PUT of part {number}", web.send("PUT", url, data))
        parts = ask("list parts", store.list_parts, key, upload_id)
        sizes = [(p.number, p.size) for p in parts or []]
        if sizes != [(1, len(first)), (2, len(SAMPLE))]:
            return failed(f"list parts: {sizes}")
        if not ask("complete", store.complete_multipart, key, upload_id, parts):
            return failed("complete: the upload was gone")
        started.remove((key, upload_id))
        info = ask("stat", store.stat, key)
        if info is None or info.size != len(first) + len(SAMPLE):
            return failed(f"completed, but storage holds {info}")
        edge = ask("ranged read", store.read_range, key, len(first) - 10, 20)
        if edge != first[-10:] + SAMPLE[:10]:
            return failed("completed, but the parts were not joined in order")

        other = ask("create a second", store.create_multipart, dropped)
        started.append((dropped, other))
        url = store.presigned_part_put(dropped, other, 1, URL_TTL, internal=True)
        _expect_ok("presigned PUT of its part", web.send("PUT", url, SAMPLE))
        listed = [u.upload_id for u in ask("list uploads", lambda: list(store.list_multipart_uploads(prefix)))]
        if other not in listed:
            return failed(f"list uploads does not show the unfinished one: {listed}")
        ask("abort", store.abort_multipart, dropped, other)
        started.remove((dropped, other))
        gone = ask("list parts after abort", store.list_parts, dropped, other) is None
        still = other in [u.upload_id for u in ask("list uploads", lambda: list(store.list_multipart_uploads(prefix)))]
        if not gone or still:
            return failed("aborted, but the upload is still there")
        return passed(f"create, 2 presigned part PUTs, list parts, complete ({info.size} bytes); "
                      "list uploads, abort")
    finally:
        for k, u in started:
            try:
                store.abort_multipart(k, u)
            except (StorageRefused, Unavailable):
                pass  # run's cleanup tries again and reports what is left


def lifecycle(store: CheckedStore, prefix: str, web: Web) -> Outcome:
    ask("set the rules", store.apply_lifecycle_rules)
    rules = ask("read the rules", store.lifecycle_rules)
    ours = [r for r in rules if r.rule_id == TEMP_LIFECYCLE.rule_id]
    if ours != [TEMP_LIFECYCLE]:
        return failed(f"accepted, but reads back {ours or 'no such rule'}")
    return passed(f"{TEMP_LIFECYCLE.rule_id}: {TEMP_LIFECYCLE.prefix} expires after {TEMP_LIFECYCLE.expire_days} "
                  f"day, unfinished uploads aborted after {TEMP_LIFECYCLE.abort_multipart_days} day "
                  f"({len(rules)} rule(s) in all)")


def object_tags(store: CheckedStore, prefix: str, web: Web) -> Outcome:
    key = f"{prefix}tags.txt"
    _put(store, key)
    tags = {"mosis-check": "conformance"}
    ask("set tags", store.put_tags, key, tags)
    got = ask("read tags", store.get_tags, key)
    return (passed if got == tags else failed)(f"reads back {got}")


def delete(store: CheckedStore, prefix: str, web: Web) -> Outcome:
    key = f"{prefix}delete/doomed.txt"
    _put(store, key)
    ask("delete", store.delete, key)
    if ask("stat after delete", store.stat, key) is not None:
        return failed("deleted, but the object is still there")
    ask("delete of a missing key", store.delete, f"{prefix}delete/never-written.txt")
    return passed("deleted; deleting a missing key is not an error")


@dataclass(frozen=True)
class Check:
    name: str
    required: bool
    what: str
    run: Callable[[CheckedStore, str, Web], Outcome]


CHECKS = (
    Check("objects", True, "put, stat, list and a ranged read (everything the app stores and validates)", objects),
    Check("presigned-put", True, "a presigned PUT stores the bytes (package uploads)", presigned_put),
    Check("presigned-get", True, "a presigned GET returns the bytes (the edge's package fetch)", presigned_get),
    Check("response-headers", False, "a presigned GET answers with the Content-Type and Content-Disposition "
          "signed into it (the file name of a download)", response_headers),
    Check("presigned-expiry", True, "a PUT and a GET URL signed for 1 s are refused once expired", presigned_expiry),
    Check("tampered-signature", True, "a presigned URL with a changed signature is refused", tampered_signature),
    Check("bucket-policy", True, "storage takes the policy that lets anyone read assets/ "
          "(with MOSIS_S3_PUBLIC_ASSETS=true)", bucket_policy),
    Check("anonymous-read-assets", True, "an object under assets/ can be read without a signature "
          "(with MOSIS_S3_PUBLIC_ASSETS=true)", anonymous_read_assets),
    Check("anonymous-read-elsewhere", True, "an object outside assets/ cannot be read without a signature",
          anonymous_read_elsewhere),
    Check("server-side-copy", True, "copy within the bucket (an upload's completion)", server_side_copy),
    Check("multipart", True, "multipart upload: create, presigned part PUT, list parts, complete, "
          "list uploads, abort (packages over the threshold)", multipart),
    Check("lifecycle", False, "the temp/ lifecycle rule is kept (a safety net for abandoned uploads)", lifecycle),
    Check("object-tags", False, "object tags are kept (not used by the appliance today)", object_tags),
    Check("delete", True, "delete, and a delete of a missing key is no error (retention, sweeps)", delete),
)


@dataclass(frozen=True)
class Result:
    name: str
    required: bool
    status: str
    answer: str
    what: str

    def as_dict(self) -> dict:
        return asdict(self)


def run_check(check: Check, store: CheckedStore, prefix: str, web: Web) -> Result:
    """One check; whatever it raises is a failure with what was said."""
    try:
        outcome = check.run(store, prefix, web)
    except Failed as e:
        outcome = failed(str(e))
    except Exception as e:  # an answer the adapter did not expect is still an answer
        outcome = failed(f"{type(e).__name__}: {e}")
    return Result(check.name, check.required, outcome.status, outcome.answer, check.what)


def cleanup(store: CheckedStore, prefix: str) -> dict:
    """Abort the multipart uploads and delete the objects under the check's prefixes."""
    problems, removed = [], 0
    for base in (prefix, f"{ASSETS}/{prefix}"):
        try:
            for upload in list(store.list_multipart_uploads(base)):
                store.abort_multipart(upload.key, upload.upload_id)
        except (StorageRefused, Unavailable) as e:
            problems.append(f"multipart uploads under {base}: {e}")
        try:
            keys = [o.key for o in store.list(base)]
            store.delete(*keys)
            removed += len(keys)
            left = [o.key for o in store.list(base)]
        except (StorageRefused, Unavailable) as e:
            problems.append(f"objects under {base}: {e}")
            continue
        if left:
            problems.append(f"still under {base}: {', '.join(left[:10])}")
    return {"removed": removed, "problems": problems}


@dataclass(frozen=True)
class Report:
    prefix: str
    results: list[Result]
    cleanup: dict

    @property
    def ok(self) -> bool:
        """No required check failed: the appliance works with this provider."""
        return not any(r.required and r.status == "fail" for r in self.results)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "prefix": self.prefix, "checks": [r.as_dict() for r in self.results],
                "cleanup": self.cleanup}


def run(store: CheckedStore, web: Web, prefix: str | None = None, checks=CHECKS) -> Report:
    """Every check against `store` under a throw-away prefix, then clean up."""
    prefix = prefix or new_prefix()
    results: list[Result] = []
    try:
        for check in checks:
            results.append(run_check(check, store, prefix, web))
    finally:
        removed = cleanup(store, prefix)
    return Report(prefix, results, removed)
