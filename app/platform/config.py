"""Configuration: every setting the appliance reads, in one place.

Settings come from `MOSIS_*` environment variables, read once at start-up.
Each is declared once, as a field of Settings (or of one of its groups)
made by `setting(...)`: its variable, default, kind, bounds and help text.
The loader (Settings.from_env) goes over the declarations, and
docs/configuration.md's tables are generated from them
(`python -m app.platform.config --markdown`); tests/test_config_docs.py
fails when the file is not what the declarations give. Ports and bind
addresses of every process (API, scheduler, edge, scripts/run's storage) are
settings too: nothing else reads them from the environment.

A value the appliance cannot run with raises ConfigError naming the
variable. Secrets still holding .env.example's placeholder (`change-me…`),
and an admin token or download link secret too short to be secret, are such
values: a process starting with one stops (settings_for_process) with one
line saying which, before it serves or changes anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from mosis_format.validation import MiB, PackageLimits

# S3 refuses parts smaller than this, except the last part of an upload.
S3_MIN_PART_BYTES = 5 * MiB
HOUR = 3600
DAY = 24 * HOUR


class ConfigError(ValueError):
    """A setting has a value the appliance cannot run with."""


# What .env.example ships in place of every secret: a value still holding it
# was never filled in.
PLACEHOLDER_RE = re.compile(r"change-?me", re.I)
# The shortest admin token and download link secret accepted; `openssl rand
# -hex 32` gives 64 characters, scripts/run generates 47.
MIN_SECRET_CHARS = 32
MAKE_A_SECRET = "`openssl rand -hex 32` makes one"


def is_placeholder(value: str) -> bool:
    return bool(PLACEHOLDER_RE.search(value))




# -- declarations ------------------------------------------------------------------

KINDS = ("str", "url", "path", "int", "float", "seconds", "bool", "words", "networks", "secret")
# Sections of docs/configuration.md, in the order of the file.
SECTIONS = ("core", "storage", "replica", "uploads", "retention", "housekeeping", "processes", "monitoring", "assets", "edge")


@dataclass(frozen=True)
class Var:
    """How one environment variable becomes one setting."""

    env: str
    kind: str
    help: str
    section: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    min_chars: int = 0  # secrets: the shortest accepted
    # The default as an operator reads it, where the value alone says too
    # little (computed, or differing under compose).
    shown: str = ""
    # Applied to the parsed value (may refuse it with ConfigError).
    check: Callable[[str, object], object] | None = None

    def __post_init__(self):
        assert self.kind in KINDS and self.section in SECTIONS, self

    def read(self, env: dict, default):
        """The setting's value in `env`: the default when unset or empty
        (a secret's default is checked as a secret)."""
        raw = env.get(self.env)
        if raw in (None, "") and self.kind != "secret":
            return default
        value = self._parse(raw, default)
        if self.check:
            value = self.check(self.env, value)
        if self.kind in ("int", "float", "seconds"):
            self._bounds(value)
        if self.choices and value not in self.choices:
            raise ConfigError(f"{self.env} must be one of {', '.join(self.choices)}, got {raw!r}")
        return value

    def _parse(self, raw: str | None, default):
        name = self.env
        if self.kind == "secret":
            return _secret(name, raw or default, self.min_chars)
        if self.kind == "url":
            return raw.rstrip("/")
        if self.kind == "path":
            return Path(raw)
        if self.kind == "int":
            try:
                return int(raw)
            except ValueError:
                raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
        if self.kind in ("float", "seconds"):
            try:
                return float(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if self.kind == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{name} must be true or false, got {raw!r}")
        if self.kind == "words":
            return tuple(w for w in re.split(r"[,\s]+", raw) if w)
        if self.kind == "networks":
            return _networks(tuple(w for w in re.split(r"[,\s]+", raw) if w), name)
        return raw

    def _bounds(self, value) -> None:
        low, high, unit = self.minimum, self.maximum, " seconds" if self.kind == "seconds" else ""
        if low is not None and high is not None and not low <= value <= high:
            raise ConfigError(f"{self.env} must be between {low} and {high}, got {value}")
        if low is not None and value < low:
            raise ConfigError(f"{self.env} must be at least {low}{unit}, got {value}")
        if high is not None and value > high:
            raise ConfigError(f"{self.env} must be at most {high}{unit}, got {value}")


def setting(env: str, default, help: str, *, section: str, kind: str = "", **rules):
    """A field of Settings (or of a group) read from `env`; `kind` defaults
    to the default's type. Integers are never negative unless told."""
    kind = kind or {bool: "bool", int: "int", float: "float", str: "str", tuple: "words"}.get(type(default), "path")
    if kind == "int":
        rules.setdefault("minimum", 0)
    if kind == "seconds":
        rules.setdefault("minimum", 0.1)
    var = Var(env, kind, " ".join(help.split()), section, **rules)
    return field(default=default, metadata={"var": var})


def _secret(name: str, value: str, min_chars: int = 0) -> str:
    """A secret setting: never .env.example's placeholder, at least `min_chars` long."""
    if value and is_placeholder(value):
        raise ConfigError(f"{name} is still the placeholder of .env.example: set a secret of its own "
                          f"({MAKE_A_SECRET})")
    if value and len(value) < min_chars:
        raise ConfigError(f"{name} is too short to be secret ({len(value)} characters, at least {min_chars}): "
                          f"{MAKE_A_SECRET}")
    return value


def _database_url(name: str, url: str) -> str:
    password = urlparse(url).password if "://" in url else None
    if password and is_placeholder(unquote(password)):
        raise ConfigError(f"{name} carries the placeholder password of .env.example (compose builds "
                          f"it from POSTGRES_PASSWORD): set a password of its own ({MAKE_A_SECRET})")
    return url


def _link_secret(name: str, value: str) -> str:
    if value and not LINK_SECRET_RE.match(value):
        raise ConfigError(f"{name} must be 32-256 characters of A-Z, a-z, 0-9, _ and -")
    return value


def _networks(values: tuple[str, ...], name: str) -> tuple[str, ...]:
    out = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_network(value, strict=False)))
        except ValueError:
            raise ConfigError(f"{name}: {value!r} is not an IP address or network") from None
    return tuple(out)


def _upper(name: str, value: str) -> str:
    return value.upper()


def _share(name: str, value: float) -> float:
    """A share of a whole: above 0, at most 1."""
    if not 0 < value <= 1:
        raise ConfigError(f"{name} must be above 0 and at most 1, got {value}")
    return value


# The secret is written into nginx's configuration: keep it to characters
# that need no quoting there.
LINK_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{32,256}\Z")
PORT = {"minimum": 1, "maximum": 65535}

# PackageLimits belongs to mosis_format (its defaults are there); its variables:
LIMITS = {
    "max_package_bytes": Var("MOSIS_MAX_PACKAGE_BYTES", "int", "largest package accepted", "uploads", minimum=1),
    "max_entries": Var("MOSIS_MAX_PACKAGE_ENTRIES", "int", "most entries in one archive", "uploads", minimum=1),
    "max_unpacked_bytes": Var("MOSIS_MAX_UNPACKED_BYTES", "int", "most bytes an archive may unpack to", "uploads",
                              minimum=1),
    "max_compression_ratio": Var("MOSIS_MAX_COMPRESSION_RATIO", "float",
                                 "an entry (or the archive) inflating more than this ratio ...", "uploads"),
    "compression_ratio_floor": Var("MOSIS_COMPRESSION_RATIO_FLOOR_BYTES", "int",
                                   "... and to more than this many bytes is refused as a zip bomb", "uploads",
                                   minimum=0),
    "max_nested_depth": Var("MOSIS_MAX_NESTED_ARCHIVE_DEPTH", "int",
                            "archives inside the package are walked this deep (and count towards the limits); "
                            "deeper nesting is refused. The limits are explained in [validation](validation.md)",
                            "uploads", minimum=0),
}


def declared(cls) -> dict[str, Var]:
    """The variables of a settings class's fields, by field name."""
    if cls is PackageLimits:
        return LIMITS
    return {f.name: f.metadata["var"] for f in dataclasses.fields(cls) if "var" in f.metadata}


def _groups(cls) -> dict[str, type]:
    """Fields holding a group of settings (a dataclass of their own), by name."""
    defaults = cls()
    return {f.name: type(getattr(defaults, f.name)) for f in dataclasses.fields(cls)
            if dataclasses.is_dataclass(getattr(defaults, f.name))}


def load(cls, env: dict):
    """An instance of `cls` with every declared variable of `env` applied."""
    defaults = cls()
    values = {name: var.read(env, getattr(defaults, name)) for name, var in declared(cls).items()}
    values.update({name: load(group, env) for name, group in _groups(cls).items()})
    return cls(**values)


def every_var(cls=None) -> list[tuple[Var, object]]:
    """Every declared variable with its default, groups included."""
    cls = cls or Settings
    defaults = cls()
    out = [(var, getattr(defaults, name)) for name, var in declared(cls).items()]
    for group in _groups(cls).values():
        out.extend(every_var(group))
    return out


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each kind of version keeps its objects, in seconds."""

    temp_upload: int = setting("MOSIS_RETENTION_TEMP_SECONDS", HOUR, "uploads not completed", section="retention")
    failed: int = setting("MOSIS_RETENTION_FAILED_SECONDS", DAY, "versions whose validation failed",
                          section="retention")
    rejected: int = setting("MOSIS_RETENTION_REJECTED_SECONDS", 7 * DAY, "versions refused by validation",
                            section="retention")
    draft: int = setting("MOSIS_RETENTION_DRAFT_SECONDS", 30 * DAY, "validated versions never published",
                         section="retention")
    superseded: int = setting("MOSIS_RETENTION_SUPERSEDED_SECONDS", 365 * DAY,
                              "published versions, after they were superseded", section="retention")
    pulled: int = setting("MOSIS_RETENTION_PULLED_SECONDS", 30 * DAY, "pulled versions", section="retention")


@dataclass(frozen=True)
class HousekeepingPolicy:
    """Orphan sweep, integrity scrub and metadata backups; see docs/retention.md."""

    orphan_grace: int = setting("MOSIS_ORPHAN_GRACE_SECONDS", DAY, "objects younger than this are never judged "
                                "orphans", section="housekeeping", minimum=60)
    orphan_delete: bool = setting("MOSIS_ORPHAN_DELETE", False, """delete orphans under `packages/` and `temp/`
        past the grace period (else report only); left-over temp uploads of finished versions are always
        deleted""", section="housekeeping")
    scrub_share_per_day: float = setting("MOSIS_SCRUB_SHARE_PER_DAY", 0.1, """share of the stored packages the
        integrity scrub re-reads and re-hashes per day; 0 turns it off""", section="housekeeping",
                                         minimum=0, maximum=1)
    backup_keep: int = setting("MOSIS_BACKUP_KEEP", 14, "database backups kept under `backups/db/` (newest first)",
                               section="housekeeping", minimum=1)
    job_lease: int = setting("MOSIS_JOB_LEASE_SECONDS", 0, """how long a housekeeping job's lease lasts, so how
        long a scheduler that died mid-job keeps the job from the others; 0: each job's own (1 hour, longer for the
        scrub and backups). Shorter only where jobs are known to be short""", section="housekeeping")


@dataclass(frozen=True)
class Settings:
    # -- core
    data_dir: Path = setting("MOSIS_DATA_DIR", Path("var"), """local state: SQLite database, signing key, logs,
        S3 data of `scripts/run`""", section="core", shown="`./var`")
    database_url: str = setting("MOSIS_DATABASE_URL", "", "or `postgresql://user:pass@host:5432/db` (pooled)",
                                section="core", shown="`sqlite:///$MOSIS_DATA_DIR/mosis.db`", check=_database_url)
    admin_token: str = setting("MOSIS_ADMIN_TOKEN", "", """bearer token of the admin; `scripts/run` generates one
        into `$MOSIS_DATA_DIR/admin-token`""", section="core", kind="secret", min_chars=MIN_SECRET_CHARS,
                               shown="(none: admin routes refuse everyone)")
    # Where devices and developers reach the appliance (the edge).
    public_url: str = setting("MOSIS_PUBLIC_URL", "http://127.0.0.1:8080", """where devices and developers reach
        the appliance (the edge)""", section="core", kind="url")
    # Base URL under which bucket objects are public: `{cdn_url}/{key}` serves
    # `assets/...` and (with a signed link) `packages/...`.
    cdn_url: str = setting("MOSIS_CDN_URL", "", """base URL of public objects: `{MOSIS_CDN_URL}/assets/...`,
        signed `/packages/...` links""", section="core", kind="url", shown="`MOSIS_PUBLIC_URL`")
    contact_email: str = setting("MOSIS_CONTACT_EMAIL", "", """the operator's address for developers, given as
        `info.contact` of `/v1/openapi.json` (with `MOSIS_PUBLIC_URL`)""", section="core")
    signing_key: str = setting("MOSIS_SIGNING_KEY", "", "base64 of a raw 32-byte Ed25519 seed", section="core",
                               kind="secret", shown="generated into `$MOSIS_DATA_DIR/signing-key.pem`")
    index_lifetime: int = setting("MOSIS_INDEX_LIFETIME_SECONDS", 7 * DAY, """how long a signed catalog index
        (`/v1/index.json`) stays valid for devices; the scheduler signs a fresh one before a third of it has
        passed ([signing.md](signing.md#the-catalog-index))""", section="core", minimum=600)
    log_level: str = setting("MOSIS_LOG_LEVEL", "INFO", "the lowest level logged (any case)", section="core",
                             check=_upper, choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    log_format: str = setting("MOSIS_LOG_FORMAT", "json", "`json` (one object per line, with `request_id`) or "
                              "`text`", section="core", choices=("json", "text"))

    # -- object storage: the app talks to `s3_endpoint`; URLs handed to
    # clients are signed for `s3_public_endpoint` (the edge in front of storage).
    s3_endpoint: str = setting("MOSIS_S3_ENDPOINT", "http://127.0.0.1:8333", """endpoint the app uses, `http://`
        or `https://` (a hosted provider's); the edge reaches storage at it too unless `MOSIS_EDGE_STORAGE_SERVERS`
        says otherwise. Requests are path-style (`{endpoint}/{bucket}/{key}`), AWS S3 included""",
                               section="storage")
    s3_public_endpoint: str = setting("MOSIS_S3_PUBLIC_ENDPOINT", "", """where presigned upload URLs point (the
        edge, which relays them to storage); they are signed for `MOSIS_S3_ENDPOINT`'s host""", section="storage",
                                      shown="`MOSIS_PUBLIC_URL`")
    s3_access_key: str = setting("MOSIS_S3_ACCESS_KEY", "mosis", """access key; storage refusing the credentials
        stops the app's start""", section="storage", shown="`mosis`; compose: from `.env` (required)")
    s3_secret_key: str = setting("MOSIS_S3_SECRET_KEY", "mosis-local-secret", """secret key; storage refusing
        the credentials stops the app's start""", section="storage", kind="secret",
                                 shown="`mosis-local-secret`, a fixed value in `app/platform/config.py` meant only "
                                 "for a native stack on this machine (never for storage reachable from elsewhere); "
                                 "`scripts/run` generates one into `$MOSIS_DATA_DIR/s3-secret` and gives it to both "
                                 "its S3 server and the app; compose: from `.env` (required: compose refuses to "
                                 "start without it)")
    s3_region: str = setting("MOSIS_S3_REGION", "us-east-1", """signing region (explicit, so signing needs no
        network call); R2: `auto`, B2 and AWS: the bucket's region""", section="storage")
    bucket: str = setting("MOSIS_S3_BUCKET", "mosis", """the one bucket; created with its policy and lifecycle
        rules at start where storage lets the app (else made by hand, see
        [deploy.md](deploy.md#using-another-s3-server))""", section="storage")
    s3_public_assets: bool = setting("MOSIS_S3_PUBLIC_ASSETS", True, """`true`: the app sets a bucket policy that
        lets anyone read `assets/`, and the edge fetches assets anonymously. `false`: no policy; on a cache miss the
        edge fetches an asset with a URL the app presigns, as for packages (R2, B2 and other providers without
        bucket policies or anonymous reads)""", section="storage")
    s3_ca_file: str = setting("MOSIS_S3_CA_FILE", "/etc/ssl/certs/ca-certificates.crt", """CA bundle that an
        `https://` storage endpoint's certificate is checked against, by the app and the edge
        (`proxy_ssl_trusted_certificate`); the system's bundle fits hosted providers, a file of your own a private
        CA. The app uses its default trust store when the file does not exist""", section="storage")
    # Every storage call gives up after these, so a stalled server costs a
    # request seconds, not a thread for minutes.
    s3_connect_timeout: float = setting("MOSIS_S3_CONNECT_TIMEOUT_SECONDS", 2.0, """how long a storage call waits
        for a connection (also for a free call slot, below); a refused connection is retried `MOSIS_S3_RETRIES`
        times, quickly""", section="storage", kind="seconds")
    s3_read_timeout: float = setting("MOSIS_S3_READ_TIMEOUT_SECONDS", 30.0, """how long a storage call waits for
        each answer (or each read of a download): a storage that takes requests and stops answering costs a request
        this long, never a thread for minutes. A read that timed out is not retried""", section="storage",
                                     kind="seconds")
    s3_retries: int = setting("MOSIS_S3_RETRIES", 2, """retries of a storage call whose connection was refused or
        that got a 5xx answer (0: none)""", section="storage")
    storage_call_slots: int = setting("MOSIS_STORAGE_CALL_SLOTS", 3, """storage calls one API process makes at
        once; more wait for a slot as long as for a connection (`MOSIS_S3_CONNECT_TIMEOUT_SECONDS`), then answer
        503 `storage_unavailable`. Keep it below `MOSIS_APP_THREADS`: a stalled storage then holds at most this many
        threads, and routes that need no storage always find one""", section="storage", minimum=1)
    health_probe_seconds: float = setting("MOSIS_HEALTH_PROBE_SECONDS", 1.0, """the API checks the database and
        storage this often, each process on a thread of its own; `/readyz` answers from the latest checks (a flood
        of readiness requests costs nothing) and says 503 once a check has had no answer for this long (at least
        1 s), so within about twice this after a dependency stops answering. A check itself waits 5 times that for
        its answer (a loaded machine answers late, not never); after 2.5 times that without an answer from storage,
        routes that need storage answer 503 `storage_unavailable` at once instead of waiting. Each check is one
        request to storage (a `HEAD` of the bucket): with a provider that bills requests, 10 is plenty""",
                                          section="storage", kind="seconds")
    storage_canary_seconds: int = setting("MOSIS_STORAGE_CANARY_SECONDS", 30, """how often that check also writes
        a 2-byte object (`health/canary-{host}-{pid}`) and deletes it again, to see that storage takes writes (a full
        disk refuses them while reads still work): readiness and `mosis_storage_up` report it. 0: never""",
                                          section="storage")

    # -- the off-site replica (app/housekeeping/replica.py, docs/operations.md): a
    # second S3 bucket, at any provider, every object is copied to. No endpoint:
    # no replica. Deletes reach it only after the delay.
    replica_s3_endpoint: str = setting("MOSIS_REPLICA_S3_ENDPOINT", "", """the replica's S3 endpoint, `http://` or
        `https://`; unset, nothing is replicated and nothing queues up for it""", section="replica", kind="url",
                                       shown="unset (no replica)")
    replica_bucket: str = setting("MOSIS_REPLICA_S3_BUCKET", "mosis-replica", """the replica's bucket; created at
        the first copy where the credentials allow""", section="replica")
    replica_access_key: str = setting("MOSIS_REPLICA_S3_ACCESS_KEY", "", """the replica's access key: give it a key
        of its own, not the primary's""", section="replica")
    replica_secret_key: str = setting("MOSIS_REPLICA_S3_SECRET_KEY", "", "the replica's secret key",
                                      section="replica", kind="secret")
    replica_region: str = setting("MOSIS_REPLICA_S3_REGION", "us-east-1", """signing region of the replica (R2:
        `auto`, B2: the bucket's region)""", section="replica")
    replica_ca_file: str = setting("MOSIS_REPLICA_S3_CA_FILE", "/etc/ssl/certs/ca-certificates.crt", """CA bundle
        the replica's HTTPS certificate is checked against (default trust store when the file does not exist)""",
                                   section="replica")
    replica_delete_delay: int = setting("MOSIS_REPLICA_DELETE_DELAY_SECONDS", 30 * DAY, """how long an object
        deleted on the primary (retention, a removed asset, a pruned backup) stays on the replica: a mistaken purge
        or a stolen admin token cannot destroy the off-site copy at once""", section="replica", minimum=0,
                                        shown="2592000 (30 days)")

    # -- uploads, downloads, validation
    upload_url_ttl: int = setting("MOSIS_UPLOAD_URL_TTL_SECONDS", 15 * 60, """lifetime of a presigned upload URL
        (whole file or one part)""", section="uploads", minimum=60)
    # Packages larger than the threshold upload in parts (S3 multipart), so a
    # broken upload resumes from its last part instead of starting over.
    multipart_threshold_bytes: int = setting("MOSIS_MULTIPART_THRESHOLD_BYTES", 64 * MiB, """larger packages
        upload in parts (S3 multipart), resumable part by part; see [cli.md](cli.md#resumable-uploads)""",
                                             section="uploads", minimum=1)
    multipart_part_bytes: int = setting("MOSIS_MULTIPART_PART_BYTES", 8 * MiB, """part size (S3's minimum is
        5 MiB); grown for packages that would need over 10 000 parts""", section="uploads",
                                        minimum=S3_MIN_PART_BYTES)
    download_url_ttl: int = setting("MOSIS_DOWNLOAD_URL_TTL_SECONDS", HOUR, """lifetime of a download link: from
        the moment it is issued, rounded up to a whole `MOSIS_PUBLIC_READ_MAX_AGE_SECONDS`, so a link handed out
        from a cache is valid for at least this minus the public-read interval
        ([edge.md](edge.md#public-reads))""", section="uploads", minimum=60)
    # Public reads are cacheable by the edge, Cloudflare and devices (docs/edge.md).
    public_read_max_age: int = setting("MOSIS_PUBLIC_READ_MAX_AGE_SECONDS", 5, """how long the edge, Cloudflare
        and devices may keep the package listing and the download info (`Cache-Control: public, max-age=…`); 0:
        `no-cache` (kept, revalidated with the ETag every time)""", section="uploads")
    public_read_stale: int = setting("MOSIS_PUBLIC_READ_STALE_SECONDS", 5, """`stale-while-revalidate` of every
        public read: how long after its max-age a cache may still answer while one request refreshes it. The
        max-age plus this is the public-read interval, at most half of `MOSIS_DOWNLOAD_URL_TTL_SECONDS` (a larger
        value stops the start)""", section="uploads")
    public_static_max_age: int = setting("MOSIS_PUBLIC_STATIC_MAX_AGE_SECONDS", 300, """the same max-age for the
        signing key and the OpenAPI document, which change only when the appliance restarts with another key or
        version""", section="uploads")
    limits: PackageLimits = field(default_factory=PackageLimits)
    validation_lease_seconds: int = setting("MOSIS_VALIDATION_LEASE_SECONDS", 300, """a validation worker's lease
        on a version; after it, another worker retries""", section="uploads", minimum=5)
    validation_poll_seconds: float = setting("MOSIS_VALIDATION_POLL_SECONDS", 1.0, """how often the scheduler
        looks for work""", section="uploads")
    validation_retry_seconds: int = setting("MOSIS_VALIDATION_RETRY_SECONDS", 15, """when storage fails during
        validation, the version waits this long before it is tried again""", section="uploads", minimum=1)
    validation_max_attempts: int = setting("MOSIS_VALIDATION_MAX_ATTEMPTS", 5, """crashed validations before the
        version fails with `validation_error` (and, past the wait below, storage failures before it fails with
        `storage_unreadable`)""", section="uploads", minimum=1)
    validation_storage_wait_seconds: int = setting("MOSIS_VALIDATION_STORAGE_WAIT_SECONDS", 6 * HOUR, """storage
        failures postpone a validation without counting an attempt while the version was uploaded less than this
        long ago; then each counts, so a version never stays `validating` for ever
        ([validation](validation.md#storages-fault-or-the-packages))""", section="uploads")
    # Delta updates (docs/deltas.md): a published version gets patches from
    # this many previous versions, each kept only if it is at most this share
    # of the full package.
    delta_from_versions: int = setting("MOSIS_DELTA_FROM_VERSIONS", 3, """when a version is published, the
        scheduler makes patches to it from this many previous published versions of the app whose package is still
        stored; 0: no patches ([deltas](deltas.md#the-store-making-serving-and-removing-patches))""",
                                       section="uploads", minimum=0)
    delta_max_ratio: float = setting("MOSIS_DELTA_MAX_RATIO", 0.6, """a patch is kept only if it is at most this
        share of the target package's size (above 0, at most 1); a larger one saves too little to be worth a second
        download path""", section="uploads", kind="float", check=_share)
    max_json_bytes: int = setting("MOSIS_MAX_JSON_BYTES", 64 * 1024, """largest request body on every route but
        the icon and screenshot uploads (413 `body_too_large`)""", section="uploads", minimum=1024)

    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    housekeeping: HousekeepingPolicy = field(default_factory=HousekeepingPolicy)

    # -- processes: where each listens, and scripts/run's storage
    app_bind: str = setting("MOSIS_APP_BIND", "127.0.0.1:8000", "the API's (gunicorn's) bind address",
                            section="processes", shown="`127.0.0.1:8000`; the image: `0.0.0.0:8000`")
    app_workers: int = setting("MOSIS_APP_WORKERS", 0, "gunicorn workers (0: `min(4, 2×CPUs)`)",
                               section="processes", shown="`min(4, 2×CPUs)`")
    app_threads: int = setting("MOSIS_APP_THREADS", 4, "threads per gunicorn worker", section="processes",
                               minimum=1)
    scheduler_metrics_addr: str = setting("MOSIS_SCHEDULER_METRICS_ADDR", "127.0.0.1:8001", """where the scheduler
        serves its own `/metrics`""", section="processes", shown="`127.0.0.1:8001`; compose: `0.0.0.0:8001`")
    http_port: int = setting("MOSIS_HTTP_PORT", 8080, """the edge's port: `scripts/run`'s on 127.0.0.1; compose:
        the host port nginx is published on (`.env.example`: 80)""", section="processes", **PORT)
    https_port: int = setting("MOSIS_HTTPS_PORT", 8443, """`scripts/run`: the edge's HTTPS port, when a
        certificate is set""", section="processes", **PORT)
    edge_internal_port: int = setting("MOSIS_EDGE_INTERNAL_PORT", 8081, """`scripts/run`: port of the edge's
        internal server""", section="processes", **PORT)
    s3_port: int = setting("MOSIS_S3_PORT", 8333, "`scripts/run`: SeaweedFS's S3 port", section="processes",
                           **PORT)
    weed_master_port: int = setting("MOSIS_WEED_MASTER_PORT", 9333, """`scripts/run`: SeaweedFS's internal
        ports, on 127.0.0.1 (each also takes its number + 10000 for gRPC, as does the S3 port); move one when
        another program holds it""", section="processes", **PORT)
    weed_volume_port: int = setting("MOSIS_WEED_VOLUME_PORT", 8340, "the same", section="processes", **PORT)
    weed_filer_port: int = setting("MOSIS_WEED_FILER_PORT", 8888, "the same", section="processes", **PORT)
    weed_admin_port: int = setting("MOSIS_WEED_ADMIN_PORT", 23646, "the same", section="processes", **PORT)
    weed_volume_size_mb: int = setting("MOSIS_WEED_VOLUME_SIZE_MB", 0, """`scripts/run`: SeaweedFS's volume size
        limit. SeaweedFS takes writes only while it can start a volume of this size, so a fixed 1 GiB refused every
        write with a gigabyte still free""", section="processes",
                                       shown="0: a sixteenth of the free space of the data dir's disk, 16 to 1024")

    # -- monitoring and cost tracking (docs/operations.md)
    storage_budget_bytes: int = setting("MOSIS_STORAGE_BUDGET_BYTES", 100 * 1024**3, """storage budget (the
        plan's example store: 100 GiB); exported as `mosis_storage_budget_bytes`, *StorageNearBudget* fires above
        80 % (0 turns the alert off)""", section="monitoring")
    edge_access_log: str = setting("MOSIS_EDGE_ACCESS_LOG", "", """nginx's JSON access log, read by the
        scheduler's `edge_log` job""", section="monitoring", shown="`$MOSIS_DATA_DIR/logs/edge-access.log`")
    prices_file: str = setting("MOSIS_PRICES_FILE", "", "prices of the monthly cost estimate per hosting option",
                               section="monitoring", shown="`app/platform/prices.json`")

    # -- icons and screenshots (docs/assets.md)
    max_asset_bytes: int = setting("MOSIS_MAX_ASSET_BYTES", 10 * MiB, """largest icon or screenshot upload (413
        `file_too_large`, refused before the body is read)""", section="assets", minimum=1024)
    max_screenshots: int = setting("MOSIS_MAX_SCREENSHOTS", 8, "screenshots per app", section="assets", minimum=1)
    # Long side over short side; 2 is Google Play's rule, tall phones (20:9) need 2.25.
    screenshot_max_ratio: float = setting("MOSIS_SCREENSHOT_MAX_RATIO", 2.0, """long side over short side of a
        screenshot (Google Play's rule); 2.25 admits 20:9 phones""", section="assets")
    screenshot_webp: bool = setting("MOSIS_SCREENSHOT_WEBP", True, """also keep a WebP (lossy, quality 90) of a
        screenshot when it is smaller than the PNG""", section="assets")

    # -- the edge (nginx, docs/edge.md) and Cloudflare
    download_link_secret: str = setting("MOSIS_DOWNLOAD_LINK_SECRET", "", """signs download links (app) and checks
        them (nginx `secure_link`); 32–256 of `A-Za-z0-9_-`""", section="edge", kind="secret",
                                        check=_link_secret,
                                        shown="generated into `$MOSIS_DATA_DIR/download-link-secret`")
    edge_internal_url: str = setting("MOSIS_EDGE_INTERNAL_URL", "", """the edge's internal server: cache purges,
        `/health`, `/stub_status`; never public""", section="edge", kind="url",
                                     shown="(none: no edge cache to purge); `scripts/run`: `http://127.0.0.1:8081`; "
                                     "compose: `http://nginx:8081`")
    edge_cache_max_bytes: int = setting("MOSIS_EDGE_CACHE_MAX_BYTES", 10 * 1024 * MiB, """disk the edge cache may
        use; a smaller value than the least stops the start""", section="edge", minimum=16 * MiB)
    edge_cache_dir: str = setting("MOSIS_EDGE_CACHE_DIR", "", """the edge's cache directory as the app sees it: a
        package that would not fit in its filesystem's free space is served from storage without caching
        ([edge.md](edge.md))""", section="edge",
                                  shown="`$MOSIS_DATA_DIR/edge/cache` (where `scripts/run`'s edge keeps it); "
                                  "compose: `/var/cache/mosis/cache`")
    edge_api_rate: int = setting("MOSIS_EDGE_API_RATE", 20, "requests per second per client on `/v1/` and "
                                 "`/readyz`", section="edge", minimum=1)
    edge_api_burst: int = setting("MOSIS_EDGE_API_BURST", 40, "the burst allowed above that rate", section="edge")
    edge_trusted_proxies: tuple[str, ...] = setting("MOSIS_EDGE_TRUSTED_PROXIES", (), """networks besides
        Cloudflare's whose `CF-Connecting-IP` the edge believes (comma-separated CIDRs)""", section="edge",
                                                    kind="networks")
    edge_tls_cert: str = setting("MOSIS_EDGE_TLS_CERT", "", """PEM file of the edge's certificate: with the key,
        the edge also serves HTTPS (compose: 8443 in the container, `scripts/run`: `MOSIS_HTTPS_PORT`)""",
                                 section="edge")
    edge_tls_key: str = setting("MOSIS_EDGE_TLS_KEY", "", "PEM file of its key", section="edge")
    edge_storage_servers: tuple[str, ...] = setting("MOSIS_EDGE_STORAGE_SERVERS", (), """the storage servers the
        edge spreads its requests over, comma-separated: `host:port` (the scheme of `MOSIS_S3_ENDPOINT`) or
        `http(s)://host[:port]`, all one scheme (`.env.example`: the four MinIO nodes). Over `https://` the edge
        sends SNI and checks the certificate for `MOSIS_S3_ENDPOINT`'s host name against `MOSIS_S3_CA_FILE`""",
                                                    section="edge", shown="`MOSIS_S3_ENDPOINT`'s host and port")
    # Reverse proxies between clients and Flask (nginx: 1).
    proxy_hops: int = setting("MOSIS_PROXY_HOPS", 1, """proxies in front of Flask whose `X-Forwarded-For`/`-Proto`
        it believes (the edge); 0 without one""", section="edge")
    cloudflare_zone_id: str = setting("MOSIS_CLOUDFLARE_ZONE_ID", "", """with the API token: publishes and pulls
        purge Cloudflare's cache too""", section="edge")
    cloudflare_api_token: str = setting("MOSIS_CLOUDFLARE_API_TOKEN", "", "the token of those purges",
                                        section="edge", kind="secret")
    cloudflare_api_url: str = setting("MOSIS_CLOUDFLARE_API_URL", "https://api.cloudflare.com/client/v4",
                                      "Cloudflare's API (the tests point it at a local stub)", section="edge",
                                      kind="url")

    def __post_init__(self):
        # A download link handed out from a cache must leave time to download.
        if self.public_read_interval > self.download_url_ttl // 2:
            raise ConfigError("MOSIS_PUBLIC_READ_MAX_AGE_SECONDS + MOSIS_PUBLIC_READ_STALE_SECONDS must be at "
                              "most half of MOSIS_DOWNLOAD_URL_TTL_SECONDS")

    @property
    def public_read_interval(self) -> int:
        """The longest a cache may answer a public read from one fetch."""
        return self.public_read_max_age + self.public_read_stale

    @property
    def resolved_app_workers(self) -> int:
        return self.app_workers or min(4, 2 * (os.cpu_count() or 1))

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'mosis.db').resolve()}"

    @property
    def resolved_cdn_url(self) -> str:
        return (self.cdn_url or self.public_url).rstrip("/")

    @property
    def resolved_edge_access_log(self) -> Path:
        return Path(self.edge_access_log) if self.edge_access_log else self.data_dir / "logs" / "edge-access.log"

    @property
    def resolved_edge_cache_dir(self) -> Path:
        return Path(self.edge_cache_dir) if self.edge_cache_dir else self.data_dir / "edge" / "cache"

    @property
    def resolved_prices_file(self) -> Path:
        return Path(self.prices_file) if self.prices_file else Path(__file__).with_name("prices.json")

    @property
    def resolved_s3_public_endpoint(self) -> str:
        return self.s3_public_endpoint or self.public_url

    @property
    def replica_configured(self) -> bool:
        return bool(self.replica_s3_endpoint)

    def replica_storage_settings(self) -> "Settings":
        """These settings with the replica in place of the primary storage:
        what a second storage adapter is built from."""
        return self.replace(s3_endpoint=self.replica_s3_endpoint, s3_public_endpoint=self.replica_s3_endpoint,
                            bucket=self.replica_bucket, s3_access_key=self.replica_access_key,
                            s3_secret_key=self.replica_secret_key, s3_region=self.replica_region,
                            s3_ca_file=self.replica_ca_file, s3_public_assets=False)

    @property
    def cloudflare_enabled(self) -> bool:
        return bool(self.cloudflare_zone_id and self.cloudflare_api_token)

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Settings":
        return load(cls, dict(os.environ if env is None else env))


def settings_for_process() -> Settings:
    """The settings of a starting process (the API, the scheduler, a
    command): a value it cannot run with stops it, exit status 2, with one
    line naming the variable instead of a traceback."""
    try:
        return Settings.from_env()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


# -- docs/configuration.md -----------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
# A generated table sits between these lines; the prose around it is the file's own.
BEGIN, END = "<!-- settings: {} -->", "<!-- end settings: {} -->"
GiB = 1024 * MiB


def _amount(var: Var, value) -> str:
    """A number as docs give it, with its size or duration in words when long."""
    if isinstance(value, float):
        return f"{value:g}"
    for unit, size in (("GiB", GiB), ("MiB", MiB)):
        if var.env.endswith("_BYTES") and value >= size and value % size == 0:
            return f"{value} ({value // size} {unit})"
    for unit, size in (("days", DAY), ("hours", HOUR)):
        if var.env.endswith("_SECONDS") and value > size and value % size == 0:
            return f"{value} ({value // size} {unit})"
    return str(value)


def shown_default(var: Var, value) -> str:
    if var.shown:
        return var.shown
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (int, float)):
        return _amount(var, value)
    if value in ("", ()):
        return "(none)"
    return f"`{', '.join(value) if isinstance(value, tuple) else value}`"


def bounds(var: Var) -> str:
    if var.choices:
        return ", ".join(f"`{c}`" for c in var.choices)
    if var.min_chars:
        return f"at least {var.min_chars} characters"
    low, high = var.minimum, var.maximum
    if low is not None and high is not None:
        return f"{_amount(var, low)} to {_amount(var, high)}"
    if low:
        return f"at least {_amount(var, low)}" + (" s" if var.kind == "seconds" else "")
    return ""


def markdown_table(section: str) -> str:
    rows = ["| variable | default | bounds | meaning |", "|---|---|---|---|"]
    for var, default in every_var():
        if var.section == section:
            rows.append(f"| `{var.env}` | {shown_default(var, default)} | {bounds(var)} | {var.help} |")
    return "\n".join(rows) + "\n"


def markdown(text: str) -> str:
    """`text` (docs/configuration.md) with each section's table generated
    from the declarations; raises ConfigError for a section without its markers."""
    for section in SECTIONS:
        begin, end = BEGIN.format(section), END.format(section)
        pattern = re.compile(rf"^{re.escape(begin)}\n.*?^{re.escape(end)}$", re.S | re.M)
        if not pattern.search(text):
            raise ConfigError(f"{DOCS.name} has no `{begin}` … `{end}` for the {section} settings")
        text = pattern.sub(lambda _: f"{begin}\n{markdown_table(section)}{end}", text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.platform.config",
                                     description="Generate the settings tables of docs/configuration.md.")
    parser.add_argument("--markdown", action="store_true", required=True,
                        help="write the tables between their markers in docs/configuration.md")
    parser.add_argument("--check", action="store_true", help="only say whether the file is up to date (exit 1)")
    parser.add_argument("--file", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    text = args.file.read_text()
    try:
        fresh = markdown(text)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if fresh == text:
        return 0
    if args.check:
        print(f"{args.file} is out of date: python -m app.platform.config --markdown", file=sys.stderr)
        return 1
    args.file.write_text(fresh)
    print(f"wrote {args.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
