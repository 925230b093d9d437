"""The edge: nginx in front of the API, uploads, downloads and assets.

One Jinja2 template, `templates/nginx.conf.j2` (package data, beside
`headers.js` and Cloudflare's ranges), rendered for a target: `native`
(scripts/run and the tests: local paths and ports) or `compose` (service
names and container paths), so both ways of running share one configuration.
Every value the template names must be given (StrictUndefined); nothing is
escaped (it is nginx's syntax, not HTML).

Download links are checked by nginx itself (the `secure_link` module): the
app signs `{expires}{path} {secret}` with MD5 and nginx recomputes it with the
same secret, rendered into its configuration. docs/edge.md says why this and
not HMAC-SHA256 in njs.

Invariants of the rendered configuration: what goes to storage is built only
from captures of the raw request line checked against the app's own key
patterns (rendered in from app/platform/storage.py and format/mosis_format/validation.py), never
from nginx's decoded $uri or the client's query and headers; only the
allow-listed response headers of storage reach a client (headers.js,
written beside the configuration); every error the edge raises is JSON; no
signature reaches a log. Rendering raises ConfigError for settings the edge
cannot serve and EdgeConfigError for a template or pattern it cannot fill;
nothing is written then.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import functools
import grp
import hashlib
import ipaddress
import os
import pwd
import re
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import jinja2

from app.platform.config import LINK_SECRET_RE, ConfigError, MiB, Settings
from app.platform.storage import ASSET_KEY_RE, DELTA_KEY_RE, PACKAGE_KEY_RE, TEMP_KEY_RE, signed_host
from mosis_format.validation import PACKAGE_ID_RE

# Package data: the template, and what the rendered configuration needs
# besides it. The repository's nginx/ holds the operators' tools.
TEMPLATES = Path(__file__).resolve().with_name("templates")
TEMPLATE = TEMPLATES / "nginx.conf.j2"
# The allow-list of storage's response headers (njs), written beside the
# rendered configuration.
HEADERS_JS = TEMPLATES / "headers.js"
JS_MODULE = "ngx_http_js_module.so"
# Where Debian's nginx and the official image keep dynamic modules.
MODULES_DIR = "/usr/lib/nginx/modules"
# Cloudflare's ranges (nginx/refresh-cloudflare-ips updates them).
CLOUDFLARE_IPS = TEMPLATES / "cloudflare-ips.txt"

LINK_SECRET_FILE = "download-link-secret"
# The app's answer on a cache miss: where nginx continues, and the query
# (a storage URL presigned for the internal endpoint) it fetches with.
ORIGIN_LOCATION = "@mosis_origin"
# The same, without the cache: nginx aborts a response whose cache file it
# cannot write (a full disk), so a package that would not fit goes here.
ORIGIN_UNCACHED_LOCATION = "@mosis_origin_uncached"
# The same for assets when the bucket is not public (MOSIS_S3_PUBLIC_ASSETS=false).
ASSET_ORIGIN_LOCATION = "@mosis_asset_origin"
ORIGIN_QUERY_HEADER = "X-Mosis-Origin-Query"
# An asset's key is never reused (app/catalog/assets.py numbers them), so its bytes
# never change: browsers and Cloudflare may keep it a year.
ASSET_MAX_AGE = 31536000
CACHE_KEYS_ZONE = "32m"  # about 250,000 cached objects
# First path segments the edge routes itself: a bucket cannot be named so.
RESERVED_PATHS = {"v1", "packages", "deltas", "assets", "healthz", "readyz", "edge", "purge"}
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
PRIVATE_NETWORKS = ("127.0.0.0/8", "::1", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


class EdgeConfigError(RuntimeError):
    """The edge's configuration cannot be rendered or nginx refuses it."""


# -- download links --------------------------------------------------------------

def link_secret(settings: Settings) -> str:
    """MOSIS_DOWNLOAD_LINK_SECRET, else the one kept under the data dir
    (created on first use, readable by the owner only)."""
    if settings.download_link_secret:
        return settings.download_link_secret
    path = Path(settings.data_dir) / LINK_SECRET_FILE
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        value = create_secret_file(path, secrets.token_urlsafe(32))
    if not LINK_SECRET_RE.match(value):
        raise ConfigError(f"{path} does not hold a valid download link secret")
    return value


def create_secret_file(path: Path, value: str) -> str:
    """Keep `value` in a new file readable by the owner only (from its first
    byte), or return what the file already holds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Exclusive create: two processes starting together agree on one secret.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def link_signature(path: str, expires: int, secret: str) -> str:
    """What nginx computes for `secure_link_md5 "$secure_link_expires$uri {secret}"`."""
    digest = hashlib.md5(f"{int(expires)}{path} {secret}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def signed_link(base_url: str, key: str, secret: str, expires: int) -> str:
    """`{base_url}/{key}?expires=...&md5=...`, valid until `expires` (Unix time)."""
    path = "/" + key.lstrip("/")
    return f"{base_url.rstrip('/')}{path}?expires={int(expires)}&md5={link_signature(path, expires, secret)}"


# -- the cache's disk ----------------------------------------------------------------

# Slack for the cache file's header and rounding to blocks.
CACHE_FILE_OVERHEAD = 64 * 1024


def cache_has_room(cache_dir: Path, size: int) -> bool:
    """Whether the edge's cache can take a `size`-byte package and keep 1 %
    of its filesystem free. nginx writes a package to its cache as it
    streams it to the client and, when the write fails (disk full), drops
    the client's response with it: a package that does not fit must be
    served without the cache. True when the cache is not visible from here
    (nothing to go by)."""
    try:
        fs = os.statvfs(cache_dir)
    except OSError:
        return True
    free = fs.f_bavail * fs.f_frsize
    reserve = fs.f_blocks * fs.f_frsize // 100
    return free - size - CACHE_FILE_OVERHEAD >= reserve


# -- targets ----------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """Where and how one edge runs: what differs between scripts/run and compose."""

    name: str
    prefix: Path  # nginx -p; the rendered nginx.conf lives here
    listen: str
    internal_listen: str
    internal_allow: tuple[str, ...]
    app_servers: tuple[str, ...]
    storage_servers: tuple[str, ...]  # host:port
    cache_dir: str
    temp_dir: str
    pid_file: str
    access_log: str
    error_log: str
    tls_listen: str | None = None
    user: str | None = None  # worker user when the master runs as root
    worker_processes: str = "auto"
    worker_connections: int = 4096
    # Each connection may hold a client's, an upstream's and a cache file's
    # descriptor; nginx raises its workers' open-file limit to this.
    worker_rlimit_nofile: int = 3 * 4096
    # Grafana behind the edge at /grafana/ (compose): resolved when asked,
    # through Docker's DNS, so nginx starts whether or not Grafana is up yet.
    grafana: bool = False
    extra_locations: str = ""  # more locations in the public server (the benchmarks' own)
    storage_scheme: str = "http"  # https: hosted S3, or TLS in front of storage
    modules_dir: str = MODULES_DIR

    @property
    def js_dir(self) -> Path:
        """Where headers.js is written: beside the configuration."""
        return self.prefix

    @property
    def conf_path(self) -> Path:
        return self.prefix / "nginx.conf"


def host_port(url: str) -> str:
    """`host:port` of an http(s) URL (the port made explicit)."""
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if not parsed.hostname:
        raise ConfigError(f"not a URL: {url!r}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{host}:{port}"


def storage_upstream(settings: Settings, servers: tuple[str, ...] = ()) -> tuple[str, tuple[str, ...]]:
    """The scheme and `host:port` servers the edge reaches storage at.

    Each server is `host:port` or `http(s)://host[:port]`; a bare one takes
    MOSIS_S3_ENDPOINT's scheme, and so do no servers at all (then the edge
    uses MOSIS_S3_ENDPOINT itself)."""
    default = urlparse(settings.s3_endpoint if "://" in settings.s3_endpoint
                       else f"http://{settings.s3_endpoint}").scheme
    schemes, hosts = set(), []
    for server in servers or (settings.s3_endpoint,):
        scheme = server.split("://", 1)[0].lower() if "://" in server else default
        if scheme not in ("http", "https"):
            raise ConfigError(f"MOSIS_EDGE_STORAGE_SERVERS: {server!r} is not host:port or an http(s) URL")
        schemes.add(scheme)
        hosts.append(host_port(server if "://" in server else f"{scheme}://{server}"))
    if len(schemes) > 1:
        raise ConfigError("MOSIS_EDGE_STORAGE_SERVERS: the storage servers must all speak http or all https")
    return schemes.pop(), tuple(hosts)


def native_target(settings: Settings, *, http_port: int, internal_port: int, app_bind: str,
                  prefix: Path | None = None, tls_port: int | None = None,
                  log_dir: Path | None = None) -> Target:
    """The edge of scripts/run and the tests: loopback ports, state under the data dir."""
    prefix = Path(prefix or Path(settings.data_dir) / "edge").resolve()
    log_dir = Path(log_dir or Path(settings.data_dir) / "logs").resolve()
    # Where the scheduler reads it (MOSIS_EDGE_ACCESS_LOG).
    access_log = Path(settings.resolved_edge_access_log).resolve()
    storage_scheme, storage_servers = storage_upstream(settings)
    return Target(
        name="native",
        prefix=prefix,
        listen=f"127.0.0.1:{http_port}",
        internal_listen=f"127.0.0.1:{internal_port}",
        internal_allow=("127.0.0.1",),
        app_servers=(app_bind,),
        storage_scheme=storage_scheme,
        storage_servers=storage_servers,
        cache_dir=settings.edge_cache_dir or str(prefix / "cache"),
        temp_dir=str(prefix / "tmp"),
        pid_file=str(prefix / "nginx.pid"),
        access_log=str(access_log),
        error_log=str(log_dir / "edge-error.log"),
        tls_listen=f"127.0.0.1:{tls_port}" if tls_port else None,
        user=_worker_user(Path(settings.data_dir)),
        **_connection_limits(),
        modules_dir=nginx_modules_dir(),
    )


def _connection_limits() -> dict:
    """Connections and open files within the hard open-file limit, which an
    unprivileged nginx may raise its soft limit to (and no further)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    connections = max(256, min(4096, hard // 3))
    return {"worker_connections": connections, "worker_rlimit_nofile": min(hard, 3 * connections)}


def compose_target(settings: Settings, *, storage_servers: tuple[str, ...] | None = None,
                   app_servers: tuple[str, ...] = ("app:8000",)) -> Target:
    """The edge of compose.yaml: service names, and the volumes compose mounts
    into the nginx image (configuration, cache, the log the scheduler reads)."""
    storage_scheme, storage_servers = storage_upstream(settings, storage_servers or ())
    return Target(
        name="compose",
        prefix=Path("/etc/mosis/edge"),
        listen="8080",
        internal_listen="8081",
        internal_allow=PRIVATE_NETWORKS,
        app_servers=app_servers,
        storage_scheme=storage_scheme,
        storage_servers=storage_servers,
        cache_dir="/var/cache/mosis/cache",
        # nginx creates only the last level of a temp path, and in a fresh
        # nginx-cache volume only its root exists.
        temp_dir="/var/cache/mosis",
        pid_file="/var/run/nginx.pid",
        access_log=settings.edge_access_log or "/var/log/mosis/edge-access.log",
        error_log="stderr",
        tls_listen="8443",
        user="nginx",
        grafana=True,
    )


def _worker_user(data_dir: Path) -> str | None:
    """As root, workers run as the data dir's owner (they must reach the
    cache under it); otherwise they run as whoever starts nginx."""
    if os.geteuid() != 0:
        return None
    data_dir.mkdir(parents=True, exist_ok=True)
    st = data_dir.stat()
    return f"{pwd.getpwuid(st.st_uid).pw_name} {grp.getgrgid(st.st_gid).gr_name}"


# -- rendering ---------------------------------------------------------------------

def cloudflare_networks(path: Path = CLOUDFLARE_IPS) -> list[str]:
    nets = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            nets.append(str(ipaddress.ip_network(line)))
    return nets


def server_names(settings: Settings) -> list[str]:
    """The host names of the API, CDN and storage URLs: one host or three."""
    names = []
    for url in (settings.public_url, settings.resolved_cdn_url, settings.resolved_s3_public_endpoint):
        host = urlparse(url).hostname
        if host and host not in names:
            names.append(host)
    return names


def _check_settings(settings: Settings) -> None:
    if not BUCKET_RE.match(settings.bucket) or settings.bucket in RESERVED_PATHS:
        raise ConfigError(f"the edge cannot route the bucket name {settings.bucket!r}: use 3-63 "
                          f"characters of a-z, 0-9, . and -, none of {sorted(RESERVED_PATHS)}")
    for name, url in (("MOSIS_PUBLIC_URL", settings.public_url), ("MOSIS_CDN_URL", settings.resolved_cdn_url),
                      ("MOSIS_S3_PUBLIC_ENDPOINT", settings.resolved_s3_public_endpoint)):
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path not in ("", "/"):
            raise ConfigError(f"{name} must be an http(s) URL without a path, got {url!r}")
    if bool(settings.edge_tls_cert) != bool(settings.edge_tls_key):
        raise ConfigError("set both MOSIS_EDGE_TLS_CERT and MOSIS_EDGE_TLS_KEY, or neither")


# A presigned upload's query: the parameters our presigned URLs carry, in
# any order, with values of the characters they are made of (the escapes of
# /, + and = in credentials and tokens included), and nothing else.
_UPLOAD_PARAM = (r"(?:X-Amz-(?:Algorithm|Credential|Date|Expires|SignedHeaders|Signature|Security-Token)"
                 r"|partNumber|uploadId|uploads)(?:=(?:[A-Za-z0-9._~-]|%2[BbFf]|%3[Dd])*)?")
UPLOAD_QUERY_RE = rf"{_UPLOAD_PARAM}(?:&{_UPLOAD_PARAM})*"

def _nginx_re(pattern: re.Pattern) -> str:
    """The body of an anchored Python pattern, for a quoted nginx regex."""
    body = pattern.pattern
    if not (body.startswith("^") and body.endswith("$")) or '"' in body or "\\\\" in body:
        raise EdgeConfigError(f"pattern {body!r} cannot go into nginx's configuration")
    return body[1:-1]


@functools.lru_cache(maxsize=1)
def nginx_modules_dir() -> str:
    """Where this machine's nginx keeps its dynamic modules (`nginx -V`)."""
    try:
        out = subprocess.run([nginx_binary(), "-V"], capture_output=True, text=True, timeout=30).stderr
    except (EdgeConfigError, OSError, subprocess.SubprocessError):
        return MODULES_DIR
    found = re.search(r"--modules-path=(\S+)", out)
    return found.group(1) if found else MODULES_DIR


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=False,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def render(settings: Settings, target: Target, secret: str) -> str:
    """nginx.conf for `target`, from the template and `settings`."""
    _check_settings(settings)
    if not LINK_SECRET_RE.match(secret):
        raise ConfigError("the download link secret is not valid")
    values = {
        "settings": settings,
        "target": target,
        "trusted": cloudflare_networks() + list(settings.edge_trusted_proxies),
        "server_names": " ".join(server_names(settings)),
        "link_secret": secret,
        "js_module": f"{target.modules_dir}/{JS_MODULE}",
        "package_key_re": _nginx_re(PACKAGE_KEY_RE),
        "delta_key_re": _nginx_re(DELTA_KEY_RE),
        "asset_key_re": _nginx_re(ASSET_KEY_RE),
        "temp_key_re": _nginx_re(TEMP_KEY_RE),
        "package_id_re": _nginx_re(PACKAGE_ID_RE),
        "upload_query_re": UPLOAD_QUERY_RE,
        "bucket_re": re.escape(settings.bucket),
        "keys_zone": CACHE_KEYS_ZONE,
        "asset_max_age": ASSET_MAX_AGE,
        # The host storage URLs are signed for, and the name its certificate is checked for.
        "storage_host": signed_host(settings),
        "storage_ssl_name": urlparse(settings.s3_endpoint).hostname,
        "gateway_server": target.internal_listen if ":" in target.internal_listen
        else f"127.0.0.1:{target.internal_listen}",
        "api_max_body_bytes": max(2 * settings.max_asset_bytes, MiB),
    }
    try:
        return _environment().get_template(TEMPLATE.name).render(values)
    except jinja2.TemplateError as e:
        raise EdgeConfigError(f"the template cannot be rendered: {e}") from None


def write_config(settings: Settings, target: Target, secret: str) -> Path:
    """Render into `target.conf_path` and create the directories it names."""
    text = render(settings, target, secret)
    logs = [Path(p).parent for p in (target.access_log, target.error_log) if p.startswith("/")]
    for d in (target.prefix, target.js_dir, Path(target.temp_dir), Path(target.cache_dir).parent, *logs):
        d.mkdir(parents=True, exist_ok=True)
    write_headers_js(target.js_dir)
    path = target.conf_path
    # The secret is in it: owner only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def write_headers_js(directory: Path) -> Path:
    """headers.js where the rendered configuration imports it from."""
    path = Path(directory) / HEADERS_JS.name
    shutil.copyfile(HEADERS_JS, path)
    return path


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise EdgeConfigError("nginx is not installed (Debian: apt-get install nginx); "
                              "scripts/run and scripts/test install it when they can")
    return found


def nginx_test(conf: Path, prefix: Path) -> None:
    """`nginx -t` on a rendered file; raises with nginx's complaint."""
    proc = subprocess.run([nginx_binary(), "-t", "-q", "-p", str(prefix), "-c", str(conf), "-e", "stderr"],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise EdgeConfigError(f"nginx refuses {conf}:\n{proc.stderr.strip() or proc.stdout.strip()}")


def check(settings: Settings, target: Target, secret: str) -> None:
    """Validate `target`'s configuration with nginx -t on this machine.

    Service names and container paths of other targets do not exist here, so
    the check renders a copy with loopback servers and paths in a scratch
    directory: everything else is what the target runs.
    """
    with tempfile.TemporaryDirectory(prefix="mosis-edge-check-") as scratch:
        base = Path(scratch)
        local = dataclasses.replace(
            target, prefix=base,
            app_servers=tuple("127.0.0.1:9" for _ in target.app_servers),
            storage_servers=tuple("127.0.0.1:9" for _ in target.storage_servers),
            cache_dir=str(base / "cache"), temp_dir=str(base / "tmp"), pid_file=str(base / "nginx.pid"),
            access_log=str(base / "access.log"),
            error_log="stderr" if target.error_log == "stderr" else str(base / "error.log"),
            user=_worker_user(base), modules_dir=nginx_modules_dir())
        local_settings = settings
        if settings.edge_tls_cert and not Path(settings.edge_tls_cert).exists():
            local_settings = settings.replace(edge_tls_cert="", edge_tls_key="")
        nginx_test(write_config(local_settings, local, secret), base)


# -- command line ------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.edge",
                                     description="Render (and check) the edge's nginx configuration.")
    parser.add_argument("--target", choices=("native", "compose"), default="native")
    parser.add_argument("--out", type=Path, help="write here (default: standard output)")
    parser.add_argument("--check", action="store_true", help="validate with nginx -t")
    parser.add_argument("--http-port", type=int, help="native: the public port (default: MOSIS_HTTP_PORT)")
    parser.add_argument("--internal-port", type=int,
                        help="native: the internal server's port (default: MOSIS_EDGE_INTERNAL_PORT)")
    parser.add_argument("--app", help="native: the API's address (default: MOSIS_APP_BIND)")
    parser.add_argument("--storage", help="compose: storage servers, comma-separated (default: "
                                          "MOSIS_EDGE_STORAGE_SERVERS, else MOSIS_S3_ENDPOINT's)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.target == "native":
            target = native_target(settings, http_port=args.http_port or settings.http_port,
                                   internal_port=args.internal_port or settings.edge_internal_port,
                                   app_bind=args.app or settings.app_bind)
        else:
            if not settings.download_link_secret:
                # The app and the edge run in separate containers: a generated
                # secret would differ between them.
                raise ConfigError("set MOSIS_DOWNLOAD_LINK_SECRET: the app and the edge must share it")
            servers = (tuple(s.strip() for s in args.storage.split(",") if s.strip()) if args.storage
                       else settings.edge_storage_servers)
            target = compose_target(settings, storage_servers=servers or None)
        secret = link_secret(settings)
        if args.out:
            # headers.js goes beside the file, where it is imported from.
            target = dataclasses.replace(target, prefix=args.out.resolve().parent)
        if args.check:
            check(settings, target, secret)
        text = render(settings, target, secret)
    except (ConfigError, EdgeConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.out:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        write_headers_js(target.js_dir)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
