"""The appliance's long-lived collaborators, built once per process.

The API (one per gunicorn worker) and the scheduler build the same
`Services` from the same `Settings`, so both see one configuration.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from flask import current_app

from app.edge.nginx import link_secret, signed_link
from app.edge.purge import purgers_for
from app.housekeeping.cost import load_prices
from app.platform.config import Settings
from app.platform.db import bind_database
from app.platform.errors import Unavailable
from app.platform.files import private_dir
from app.platform.keys import KeyStore
from app.platform.migrations import migrate_database
from app.platform.objectstore import ObjectStore
from app.platform.signing import SigningKey, load_signing_key
from app.platform.storage import Storage

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    storage: ObjectStore  # the minio adapter (app.platform.storage.Storage)
    signing_key: SigningKey  # the store's first key (keyring version 1)
    # Called with the object keys whose cached copies must go (edge, CDN).
    cache_purgers: list[Callable[[list[str]], None]] = field(default_factory=list)
    # Shared with the edge, which checks the links signed with it.
    download_link_secret: str = ""
    # The off-site replica (a second adapter, from MOSIS_REPLICA_S3_*), or None.
    replica: ObjectStore | None = None
    # The API's background checks of the database and storage (app.platform.health.watch).
    health: object = None

    @property
    def keys(self) -> KeyStore:
        """The private keys at hand and the keyring (app.platform.keys)."""
        return KeyStore(self.signing_key, self.settings.data_dir)

    def public_object_url(self, key: str) -> str:
        """Where anyone can fetch a public object (assets) through the edge."""
        return f"{self.settings.resolved_cdn_url}/{key}"

    def link_expiry(self, now: float | None = None) -> int:
        """When a download link issued now expires (Unix time): the TTL from
        now, rounded up to a whole public-read max-age, so that every answer
        given within one such interval is the same (one ETag, one cache
        entry) and a copy a cache keeps stays valid at least TTL minus the
        public-read interval."""
        expires = int(now if now is not None else time.time()) + self.settings.download_url_ttl
        step = self.settings.public_read_max_age
        return -(-expires // step) * step if step else expires

    def download_link(self, key: str, now: float | None = None, *, expires: int | None = None) -> str:
        """A URL at the edge through which a device fetches `key` until the
        link expires; nginx checks it (secure_link) before anything else."""
        expires = self.link_expiry(now) if expires is None else expires
        return signed_link(self.settings.resolved_cdn_url, key, self.download_link_secret, expires)

    def purge_cached(self, keys: list[str]) -> None:
        for purge in self.cache_purgers:
            try:
                purge(keys)
            except Exception:  # a cache we cannot reach must not undo a pull
                log.exception("cache purge failed for %s", keys)


def build_services(settings: Settings, *, migrate: bool = True, ensure_bucket: bool = True) -> Services:
    private_dir(settings.data_dir)
    db = bind_database(settings.resolved_database_url)
    if migrate:
        migrate_database()
    storage: ObjectStore = Storage(settings)
    if ensure_bucket:
        try:
            storage.ensure_bucket()
        except Unavailable as e:
            # Start anyway: /readyz reports it and the scheduler tries again.
            log.warning("bucket setup postponed: %s", e.message)
    key = load_signing_key(settings.signing_key, settings.data_dir)
    if migrate:
        KeyStore(key, settings.data_dir).current()  # keyring version 1 on first start
    load_prices(settings.resolved_prices_file)  # a broken prices file stops the start
    # Leave no connection open: gunicorn forks workers from this process.
    if hasattr(db, "close_all"):
        db.close_all()
    elif not db.is_closed():
        db.close()
    return Services(settings=settings, storage=storage, signing_key=key,
                    cache_purgers=purgers_for(settings),
                    replica=Storage(settings.replica_storage_settings()) if settings.replica_configured else None,
                    download_link_secret=link_secret(settings))


def services() -> Services:
    return current_app.extensions["mosis"]
