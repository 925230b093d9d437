"""Making caches forget: the edge's disk cache and Cloudflare's.

`Services.purge_cached(keys)` calls every purger built here when a version
is published or pulled (and whenever an object changes under the same key).
A key is what the edge caches under: an object key (`packages/…`,
`assets/…`, served at MOSIS_CDN_URL) or the path of a public API read
(`v1/packages/{package_id}[/download]`, served at MOSIS_PUBLIC_URL). A
purger raises when its cache did not confirm; the caller logs it and
carries on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.error
import urllib.request
from typing import Callable

from app.platform import metrics
from app.platform.config import Settings

log = logging.getLogger(__name__)

# Cloudflare accepts at most 30 URLs per purge call on every plan.
CLOUDFLARE_BATCH = 30
TIMEOUT = 10


class PurgeError(RuntimeError):
    pass


# Public API reads the edge caches (nginx's $mosis_read_key).
API_PREFIX = "v1/"


INDEX_KEY = f"{API_PREFIX}index.json"
# The cached reads a keyring change makes wrong (a keyring version's own
# answer never changes).
KEYRING_KEYS = [f"{API_PREFIX}signing-key", f"{API_PREFIX}signing-keys", INDEX_KEY]


def public_read_keys(package_id: str, from_version_codes=()) -> list[str]:
    """The cached public reads that name a package's current version: its
    listing, its download info, the download info asked with each of
    `from_version_codes` (a delta's source, docs/deltas.md), and the catalog index."""
    return [f"{API_PREFIX}packages/{package_id}", f"{API_PREFIX}packages/{package_id}/download",
            *(download_read_key(package_id, code) for code in from_version_codes), INDEX_KEY]


def download_read_key(package_id: str, from_version_code: int) -> str:
    """The cached download info asked `?from_version_code=N` (nginx's
    $mosis_read_key: the path and that one parameter, as sent)."""
    return f"{API_PREFIX}packages/{package_id}/download?from_version_code={int(from_version_code)}"


def edge_cache_path(key: str) -> str:
    """Where nginx keeps the cached `key` (its cache key, without a leading
    slash; levels=1:2)."""
    digest = hashlib.md5(key.lstrip("/").encode()).hexdigest()
    return f"{digest[-1]}/{digest[-3:-1]}/{digest}"


def _request(req: urllib.request.Request) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        raise PurgeError(f"{req.full_url}: {e}") from e


class EdgePurger:
    """Deletes cached files through the edge's internal server (nginx's DAV
    DELETE on the cache directory), so the app needs no access to its disk."""

    name = "edge"

    def __init__(self, internal_url: str):
        self.internal_url = internal_url.rstrip("/")

    def __call__(self, keys: list[str]) -> None:
        for key in keys:
            url = f"{self.internal_url}/purge/{edge_cache_path(key)}"
            status, body = _request(urllib.request.Request(url, method="DELETE"))
            # 404: not cached, nothing to forget.
            if status not in (200, 204, 404):
                raise PurgeError(f"the edge answered {status} to purging {key}: {body[:200]!r}")


class CloudflarePurger:
    """Cloudflare's purge-by-URL API for the public URLs of `keys`: objects
    at the CDN URL, API reads at the public URL."""

    name = "cloudflare"

    def __init__(self, api_url: str, zone_id: str, token: str, cdn_url: str, public_url: str):
        self.endpoint = f"{api_url.rstrip('/')}/zones/{zone_id}/purge_cache"
        self.token = token
        self.cdn_url = cdn_url.rstrip("/")
        self.public_url = public_url.rstrip("/")

    def url_of(self, key: str) -> str:
        key = key.lstrip("/")
        return f"{self.public_url if key.startswith(API_PREFIX) else self.cdn_url}/{key}"

    def __call__(self, keys: list[str]) -> None:
        urls = [self.url_of(key) for key in keys]
        for i in range(0, len(urls), CLOUDFLARE_BATCH):
            body = json.dumps({"files": urls[i:i + CLOUDFLARE_BATCH]}).encode()
            req = urllib.request.Request(self.endpoint, data=body, method="POST", headers={
                "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
            status, answer = _request(req)
            try:
                ok = status == 200 and json.loads(answer).get("success") is True
            except ValueError:
                ok = False
            if not ok:
                raise PurgeError(f"Cloudflare answered {status} to the purge: {answer[:300]!r}")


def counted(purger) -> Callable[[list[str]], None]:
    """The purger, with its outcomes in mosis_cache_purges_total."""
    def purge(keys: list[str]) -> None:
        try:
            purger(keys)
        except Exception:
            metrics.CACHE_PURGES.labels(cache=purger.name, result="error").inc()
            raise
        metrics.CACHE_PURGES.labels(cache=purger.name, result="ok").inc()

    purge.__name__ = f"purge_{purger.name}"
    return purge


def purgers_for(settings: Settings) -> list[Callable[[list[str]], None]]:
    """The caches this configuration puts in front of storage."""
    purgers = []
    if settings.edge_internal_url:
        purgers.append(EdgePurger(settings.edge_internal_url))
    if settings.cloudflare_enabled:
        purgers.append(CloudflarePurger(settings.cloudflare_api_url, settings.cloudflare_zone_id,
                                        settings.cloudflare_api_token, settings.resolved_cdn_url,
                                        settings.public_url))
    return [counted(p) for p in purgers]
