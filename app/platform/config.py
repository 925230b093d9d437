"""Configuration: every setting the appliance reads, in one place.

Settings come from `MOSIS_*` environment variables, read once at start-up.
Each field documents its variable and default; docs/configuration.md lists
them for operators.

A value the appliance cannot run with raises ConfigError naming the
variable. Secrets still holding .env.example's placeholder (`change-me…`),
and an admin token or download link secret too short to be secret, are such
values: a process starting with one stops (settings_for_process) with one
line saying which, before it serves or changes anything.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import sys
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


def _secret(env: dict, name: str, default: str = "", min_chars: int = 0) -> str:
    """A secret setting: never .env.example's placeholder, at least `min_chars` long."""
    value = env.get(name) or default
    if value and is_placeholder(value):
        raise ConfigError(f"{name} is still the placeholder of .env.example: set a secret of its own "
                          f"({MAKE_A_SECRET})")
    if value and len(value) < min_chars:
        raise ConfigError(f"{name} is too short to be secret ({len(value)} characters, at least {min_chars}): "
                          f"{MAKE_A_SECRET}")
    return value


def _database_url(env: dict) -> str:
    url = env.get("MOSIS_DATABASE_URL", "")
    password = urlparse(url).password if "://" in url else None
    if password and is_placeholder(unquote(password)):
        raise ConfigError("MOSIS_DATABASE_URL carries the placeholder password of .env.example (compose builds "
                          f"it from POSTGRES_PASSWORD): set a password of its own ({MAKE_A_SECRET})")
    return url


def _int(env: dict, name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: dict, name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _ratio(env: dict, name: str, default: float) -> float:
    """A share: above 0, at most 1."""
    value = _float(env, name, default)
    if not 0 < value <= 1:
        raise ConfigError(f"{name} must be above 0 and at most 1, got {value}")
    return value


def _seconds(env: dict, name: str, default: float, minimum: float = 0.1) -> float:
    value = _float(env, name, default)
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum} seconds, got {value}")
    return value


def _words(env: dict, name: str) -> tuple[str, ...]:
    """A comma- or space-separated list."""
    return tuple(w for w in re.split(r"[,\s]+", env.get(name, "")) if w)


def _bool(env: dict, name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each kind of version keeps its objects, in seconds."""

    temp_upload: int = HOUR  # MOSIS_RETENTION_TEMP_SECONDS
    failed: int = DAY  # MOSIS_RETENTION_FAILED_SECONDS
    rejected: int = 7 * DAY  # MOSIS_RETENTION_REJECTED_SECONDS
    draft: int = 30 * DAY  # MOSIS_RETENTION_DRAFT_SECONDS
    superseded: int = 365 * DAY  # MOSIS_RETENTION_SUPERSEDED_SECONDS
    pulled: int = 30 * DAY  # MOSIS_RETENTION_PULLED_SECONDS


@dataclass(frozen=True)
class HousekeepingPolicy:
    """Orphan sweep, integrity scrub and metadata backups; see docs/retention.md."""

    # Objects no version knows are left alone until they are this old.
    orphan_grace: int = DAY  # MOSIS_ORPHAN_GRACE_SECONDS
    orphan_delete: bool = False  # MOSIS_ORPHAN_DELETE (else only reported)
    # Share of the stored packages whose bytes are re-read and re-hashed per day.
    scrub_share_per_day: float = 0.1  # MOSIS_SCRUB_SHARE_PER_DAY
    backup_keep: int = 14  # MOSIS_BACKUP_KEEP (newest database backups kept)
    # A job's lease (how long a dead scheduler keeps it from the others);
    # 0: each job's own (an hour or more).
    job_lease: int = 0  # MOSIS_JOB_LEASE_SECONDS


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("var")  # MOSIS_DATA_DIR
    database_url: str = ""  # MOSIS_DATABASE_URL (default: SQLite under data_dir)
    admin_token: str = ""  # MOSIS_ADMIN_TOKEN

    # Object storage: the app talks to `s3_endpoint`; URLs handed to clients
    # are signed for `s3_public_endpoint` (the edge in front of storage).
    s3_endpoint: str = "http://127.0.0.1:8333"  # MOSIS_S3_ENDPOINT
    s3_public_endpoint: str = ""  # MOSIS_S3_PUBLIC_ENDPOINT (default: public_url)
    s3_access_key: str = "mosis"  # MOSIS_S3_ACCESS_KEY
    s3_secret_key: str = "mosis-local-secret"  # MOSIS_S3_SECRET_KEY
    s3_region: str = "us-east-1"  # MOSIS_S3_REGION
    bucket: str = "mosis"  # MOSIS_S3_BUCKET
    # CA bundle storage's HTTPS certificate is checked against, by the app and
    # the edge (hosted S3, or a private CA in front of a self-hosted server).
    s3_ca_file: str = "/etc/ssl/certs/ca-certificates.crt"  # MOSIS_S3_CA_FILE
    # Whether the bucket lets anyone read assets/ (a bucket policy the app
    # sets). Off for providers without bucket policies or anonymous reads
    # (R2, B2): the edge then fetches assets with URLs the app presigns.
    s3_public_assets: bool = True  # MOSIS_S3_PUBLIC_ASSETS
    # Every storage call gives up after these (seconds), so a stalled server
    # costs a request seconds, not a thread for minutes; refused connections
    # and 5xx answers are retried this many times, timed-out reads never.
    s3_connect_timeout: float = 2.0  # MOSIS_S3_CONNECT_TIMEOUT_SECONDS
    s3_read_timeout: float = 30.0  # MOSIS_S3_READ_TIMEOUT_SECONDS
    s3_retries: int = 2  # MOSIS_S3_RETRIES
    # Storage calls one API process makes at once: keep it below
    # MOSIS_APP_THREADS, so routes without storage always find a thread.
    storage_call_slots: int = 3  # MOSIS_STORAGE_CALL_SLOTS
    # The API checks the database and storage this often on a thread of its
    # own: readiness answers from it, and while storage does not answer,
    # routes that need it answer 503 at once instead of waiting.
    health_probe_seconds: float = 1.0  # MOSIS_HEALTH_PROBE_SECONDS
    # How often that check also writes a small object (storage that is
    # reachable but refuses writes, e.g. a full disk); 0: never.
    storage_canary_seconds: int = 30  # MOSIS_STORAGE_CANARY_SECONDS

    # Where devices and developers reach the appliance (the edge).
    public_url: str = "http://127.0.0.1:8080"  # MOSIS_PUBLIC_URL
    # Base URL under which bucket objects are public: `{cdn_url}/{key}` serves
    # `assets/...` and (with a signed link) `packages/...`.
    cdn_url: str = ""  # MOSIS_CDN_URL (default: public_url)
    # Whom developers write to about the API: info.contact of /v1/openapi.json.
    contact_email: str = ""  # MOSIS_CONTACT_EMAIL

    upload_url_ttl: int = 15 * 60  # MOSIS_UPLOAD_URL_TTL_SECONDS
    download_url_ttl: int = HOUR  # MOSIS_DOWNLOAD_URL_TTL_SECONDS

    # Public reads are cacheable by the edge, Cloudflare and devices
    # (docs/edge.md): the package listing and download info for this long
    # (0: revalidated every time), then served stale for up to `stale` more
    # seconds while one request refreshes them; the signing key and the
    # OpenAPI document, which change only with a restart, longer.
    public_read_max_age: int = 5  # MOSIS_PUBLIC_READ_MAX_AGE_SECONDS
    public_read_stale: int = 5  # MOSIS_PUBLIC_READ_STALE_SECONDS
    public_static_max_age: int = 300  # MOSIS_PUBLIC_STATIC_MAX_AGE_SECONDS
    signing_key: str = ""  # MOSIS_SIGNING_KEY (base64 raw Ed25519 seed)

    validation_lease_seconds: int = 300  # MOSIS_VALIDATION_LEASE_SECONDS
    validation_poll_seconds: float = 1.0  # MOSIS_VALIDATION_POLL_SECONDS
    validation_max_attempts: int = 5  # MOSIS_VALIDATION_MAX_ATTEMPTS
    # After storage trouble, wait this long before validating the version again.
    validation_retry_seconds: int = 15  # MOSIS_VALIDATION_RETRY_SECONDS
    # Storage failures postpone a validation for free this long after the
    # upload; then they count as attempts, and the last fails the version
    # (`storage_unreadable`).
    validation_storage_wait_seconds: int = 6 * HOUR  # MOSIS_VALIDATION_STORAGE_WAIT_SECONDS

    # Delta updates (docs/deltas.md): a published version gets patches from
    # this many previous versions, each kept only if it is at most this share
    # of the full package.
    delta_from_versions: int = 3  # MOSIS_DELTA_FROM_VERSIONS (0: no patches)
    delta_max_ratio: float = 0.6  # MOSIS_DELTA_MAX_RATIO (above 0, at most 1)

    max_json_bytes: int = 64 * 1024  # MOSIS_MAX_JSON_BYTES
    # Icons and screenshots (docs/assets.md).
    max_asset_bytes: int = 10 * MiB  # MOSIS_MAX_ASSET_BYTES: largest uploaded image
    max_screenshots: int = 8  # MOSIS_MAX_SCREENSHOTS: per app
    # Long side over short side; 2 is Google Play's rule, tall phones (20:9) need 2.25.
    screenshot_max_ratio: float = 2.0  # MOSIS_SCREENSHOT_MAX_RATIO
    screenshot_webp: bool = True  # MOSIS_SCREENSHOT_WEBP: keep a WebP variant when smaller
    scheduler_metrics_addr: str = "127.0.0.1:8001"  # MOSIS_SCHEDULER_METRICS_ADDR
    log_level: str = "INFO"  # MOSIS_LOG_LEVEL
    log_format: str = "json"  # MOSIS_LOG_FORMAT: json or text

    # Monitoring and cost tracking (docs/operations.md).
    storage_budget_bytes: int = 100 * 1024**3  # MOSIS_STORAGE_BUDGET_BYTES
    edge_access_log: str = ""  # MOSIS_EDGE_ACCESS_LOG (default: data_dir/logs/edge-access.log)
    prices_file: str = ""  # MOSIS_PRICES_FILE (default: app/prices.json)

    limits: PackageLimits = field(default_factory=PackageLimits)
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    housekeeping: HousekeepingPolicy = field(default_factory=HousekeepingPolicy)

    # Packages larger than the threshold upload in parts (S3 multipart), so a
    # broken upload resumes from its last part instead of starting over.
    multipart_threshold_bytes: int = 64 * MiB  # MOSIS_MULTIPART_THRESHOLD_BYTES
    multipart_part_bytes: int = 8 * MiB  # MOSIS_MULTIPART_PART_BYTES (at least 5 MiB)

    # The edge (nginx): see docs/edge.md.
    # Shared by the app (which signs download links) and nginx (which checks
    # them); generated under data_dir when unset.
    download_link_secret: str = ""  # MOSIS_DOWNLOAD_LINK_SECRET
    # The edge's internal endpoint (cache purge, status), never public.
    edge_internal_url: str = ""  # MOSIS_EDGE_INTERNAL_URL (unset: no edge cache to purge)
    edge_cache_max_bytes: int = 10 * 1024 * MiB  # MOSIS_EDGE_CACHE_MAX_BYTES
    # Where the edge keeps its cache, as the app sees it: a package that would
    # not fit in its free space is served from storage uncached.
    edge_cache_dir: str = ""  # MOSIS_EDGE_CACHE_DIR (default: data_dir/edge/cache, scripts/run's)
    edge_api_rate: int = 20  # MOSIS_EDGE_API_RATE (requests per second per client on /v1/)
    edge_api_burst: int = 40  # MOSIS_EDGE_API_BURST
    # Proxies in front of the edge, besides Cloudflare, whose client address header is believed.
    edge_trusted_proxies: tuple[str, ...] = ()  # MOSIS_EDGE_TRUSTED_PROXIES
    edge_tls_cert: str = ""  # MOSIS_EDGE_TLS_CERT (PEM path; with the key, the edge also speaks HTTPS)
    edge_tls_key: str = ""  # MOSIS_EDGE_TLS_KEY
    # Reverse proxies between clients and Flask (nginx: 1); Flask believes
    # X-Forwarded-For/-Proto from that many hops.
    proxy_hops: int = 1  # MOSIS_PROXY_HOPS

    cloudflare_zone_id: str = ""  # MOSIS_CLOUDFLARE_ZONE_ID
    cloudflare_api_token: str = ""  # MOSIS_CLOUDFLARE_API_TOKEN
    cloudflare_api_url: str = "https://api.cloudflare.com/client/v4"  # MOSIS_CLOUDFLARE_API_URL

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
    def cloudflare_enabled(self) -> bool:
        return bool(self.cloudflare_zone_id and self.cloudflare_api_token)

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        d = cls()
        limits = PackageLimits(
            max_package_bytes=_int(env, "MOSIS_MAX_PACKAGE_BYTES", d.limits.max_package_bytes, 1),
            max_entries=_int(env, "MOSIS_MAX_PACKAGE_ENTRIES", d.limits.max_entries, 1),
            max_unpacked_bytes=_int(env, "MOSIS_MAX_UNPACKED_BYTES", d.limits.max_unpacked_bytes, 1),
            max_compression_ratio=_float(env, "MOSIS_MAX_COMPRESSION_RATIO", d.limits.max_compression_ratio),
            compression_ratio_floor=_int(
                env, "MOSIS_COMPRESSION_RATIO_FLOOR_BYTES", d.limits.compression_ratio_floor
            ),
            max_nested_depth=_int(env, "MOSIS_MAX_NESTED_ARCHIVE_DEPTH", d.limits.max_nested_depth),
        )
        r = d.retention
        retention = RetentionPolicy(
            temp_upload=_int(env, "MOSIS_RETENTION_TEMP_SECONDS", r.temp_upload),
            failed=_int(env, "MOSIS_RETENTION_FAILED_SECONDS", r.failed),
            rejected=_int(env, "MOSIS_RETENTION_REJECTED_SECONDS", r.rejected),
            draft=_int(env, "MOSIS_RETENTION_DRAFT_SECONDS", r.draft),
            superseded=_int(env, "MOSIS_RETENTION_SUPERSEDED_SECONDS", r.superseded),
            pulled=_int(env, "MOSIS_RETENTION_PULLED_SECONDS", r.pulled),
        )
        h = d.housekeeping
        share = _float(env, "MOSIS_SCRUB_SHARE_PER_DAY", h.scrub_share_per_day)
        if not 0 <= share <= 1:
            raise ConfigError(f"MOSIS_SCRUB_SHARE_PER_DAY must be between 0 and 1, got {share}")
        housekeeping = HousekeepingPolicy(
            orphan_grace=_int(env, "MOSIS_ORPHAN_GRACE_SECONDS", h.orphan_grace, 60),
            orphan_delete=_bool(env, "MOSIS_ORPHAN_DELETE", h.orphan_delete),
            scrub_share_per_day=share,
            backup_keep=_int(env, "MOSIS_BACKUP_KEEP", h.backup_keep, 1),
            job_lease=_int(env, "MOSIS_JOB_LEASE_SECONDS", h.job_lease, 0),
        )
        return cls(
            data_dir=Path(env.get("MOSIS_DATA_DIR") or d.data_dir),
            database_url=_database_url(env),
            admin_token=_secret(env, "MOSIS_ADMIN_TOKEN", min_chars=MIN_SECRET_CHARS),
            s3_endpoint=env.get("MOSIS_S3_ENDPOINT") or d.s3_endpoint,
            s3_public_endpoint=env.get("MOSIS_S3_PUBLIC_ENDPOINT", ""),
            s3_access_key=env.get("MOSIS_S3_ACCESS_KEY") or d.s3_access_key,
            s3_secret_key=_secret(env, "MOSIS_S3_SECRET_KEY", d.s3_secret_key),
            s3_region=env.get("MOSIS_S3_REGION") or d.s3_region,
            bucket=env.get("MOSIS_S3_BUCKET") or d.bucket,
            s3_ca_file=env.get("MOSIS_S3_CA_FILE") or d.s3_ca_file,
            s3_public_assets=_bool(env, "MOSIS_S3_PUBLIC_ASSETS", d.s3_public_assets),
            s3_connect_timeout=_seconds(env, "MOSIS_S3_CONNECT_TIMEOUT_SECONDS", d.s3_connect_timeout),
            s3_read_timeout=_seconds(env, "MOSIS_S3_READ_TIMEOUT_SECONDS", d.s3_read_timeout),
            s3_retries=_int(env, "MOSIS_S3_RETRIES", d.s3_retries, 0),
            storage_call_slots=_int(env, "MOSIS_STORAGE_CALL_SLOTS", d.storage_call_slots, 1),
            health_probe_seconds=_seconds(env, "MOSIS_HEALTH_PROBE_SECONDS", d.health_probe_seconds),
            storage_canary_seconds=_int(env, "MOSIS_STORAGE_CANARY_SECONDS", d.storage_canary_seconds, 0),
            public_url=(env.get("MOSIS_PUBLIC_URL") or d.public_url).rstrip("/"),
            cdn_url=env.get("MOSIS_CDN_URL", "").rstrip("/"),
            contact_email=env.get("MOSIS_CONTACT_EMAIL", ""),
            upload_url_ttl=_int(env, "MOSIS_UPLOAD_URL_TTL_SECONDS", d.upload_url_ttl, 60),
            download_url_ttl=_int(env, "MOSIS_DOWNLOAD_URL_TTL_SECONDS", d.download_url_ttl, 60),
            public_read_max_age=_int(env, "MOSIS_PUBLIC_READ_MAX_AGE_SECONDS", d.public_read_max_age, 0),
            public_read_stale=_int(env, "MOSIS_PUBLIC_READ_STALE_SECONDS", d.public_read_stale, 0),
            public_static_max_age=_int(env, "MOSIS_PUBLIC_STATIC_MAX_AGE_SECONDS", d.public_static_max_age, 0),
            signing_key=_secret(env, "MOSIS_SIGNING_KEY"),
            validation_lease_seconds=_int(env, "MOSIS_VALIDATION_LEASE_SECONDS", d.validation_lease_seconds, 5),
            validation_poll_seconds=_float(env, "MOSIS_VALIDATION_POLL_SECONDS", d.validation_poll_seconds),
            validation_max_attempts=_int(env, "MOSIS_VALIDATION_MAX_ATTEMPTS", d.validation_max_attempts, 1),
            validation_retry_seconds=_int(env, "MOSIS_VALIDATION_RETRY_SECONDS",
                                          d.validation_retry_seconds, 1),
            validation_storage_wait_seconds=_int(env, "MOSIS_VALIDATION_STORAGE_WAIT_SECONDS",
                                                 d.validation_storage_wait_seconds, 0),
            delta_from_versions=_int(env, "MOSIS_DELTA_FROM_VERSIONS", d.delta_from_versions, 0),
            delta_max_ratio=_ratio(env, "MOSIS_DELTA_MAX_RATIO", d.delta_max_ratio),
            max_json_bytes=_int(env, "MOSIS_MAX_JSON_BYTES", d.max_json_bytes, 1024),
            max_asset_bytes=_int(env, "MOSIS_MAX_ASSET_BYTES", d.max_asset_bytes, 1024),
            max_screenshots=_int(env, "MOSIS_MAX_SCREENSHOTS", d.max_screenshots, 1),
            screenshot_max_ratio=_float(env, "MOSIS_SCREENSHOT_MAX_RATIO", d.screenshot_max_ratio),
            screenshot_webp=_bool(env, "MOSIS_SCREENSHOT_WEBP", d.screenshot_webp),
            scheduler_metrics_addr=env.get("MOSIS_SCHEDULER_METRICS_ADDR") or d.scheduler_metrics_addr,
            storage_budget_bytes=_int(env, "MOSIS_STORAGE_BUDGET_BYTES", d.storage_budget_bytes),
            edge_access_log=env.get("MOSIS_EDGE_ACCESS_LOG", ""),
            prices_file=env.get("MOSIS_PRICES_FILE", ""),
            log_level=(env.get("MOSIS_LOG_LEVEL") or d.log_level).upper(),
            log_format=env.get("MOSIS_LOG_FORMAT") or d.log_format,
            limits=limits,
            retention=retention,
            multipart_threshold_bytes=_int(env, "MOSIS_MULTIPART_THRESHOLD_BYTES",
                                           d.multipart_threshold_bytes, 1),
            multipart_part_bytes=_int(env, "MOSIS_MULTIPART_PART_BYTES", d.multipart_part_bytes,
                                      S3_MIN_PART_BYTES),
            housekeeping=housekeeping,
            download_link_secret=_link_secret(_secret(env, "MOSIS_DOWNLOAD_LINK_SECRET")),
            edge_internal_url=env.get("MOSIS_EDGE_INTERNAL_URL", "").rstrip("/"),
            edge_cache_max_bytes=_int(env, "MOSIS_EDGE_CACHE_MAX_BYTES", d.edge_cache_max_bytes, 16 * MiB),
            edge_cache_dir=env.get("MOSIS_EDGE_CACHE_DIR", ""),
            edge_api_rate=_int(env, "MOSIS_EDGE_API_RATE", d.edge_api_rate, 1),
            edge_api_burst=_int(env, "MOSIS_EDGE_API_BURST", d.edge_api_burst, 0),
            edge_trusted_proxies=_networks(_words(env, "MOSIS_EDGE_TRUSTED_PROXIES"),
                                           "MOSIS_EDGE_TRUSTED_PROXIES"),
            edge_tls_cert=env.get("MOSIS_EDGE_TLS_CERT", ""),
            edge_tls_key=env.get("MOSIS_EDGE_TLS_KEY", ""),
            proxy_hops=_int(env, "MOSIS_PROXY_HOPS", d.proxy_hops, 0),
            cloudflare_zone_id=env.get("MOSIS_CLOUDFLARE_ZONE_ID", ""),
            cloudflare_api_token=_secret(env, "MOSIS_CLOUDFLARE_API_TOKEN"),
            cloudflare_api_url=(env.get("MOSIS_CLOUDFLARE_API_URL") or d.cloudflare_api_url).rstrip("/"),
        )


def settings_for_process() -> Settings:
    """The settings of a starting process (the API, the scheduler, a
    command): a value it cannot run with stops it, exit status 2, with one
    line naming the variable instead of a traceback."""
    try:
        return Settings.from_env()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


# The secret is written into nginx's configuration: keep it to characters
# that need no quoting there.
LINK_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{32,256}\Z")


def _link_secret(value: str) -> str:
    if value and not LINK_SECRET_RE.match(value):
        raise ConfigError("MOSIS_DOWNLOAD_LINK_SECRET must be 32-256 characters of A-Z, a-z, 0-9, _ and -")
    return value


def _networks(values: tuple[str, ...], name: str) -> tuple[str, ...]:
    out = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_network(value, strict=False)))
        except ValueError:
            raise ConfigError(f"{name}: {value!r} is not an IP address or network") from None
    return tuple(out)
