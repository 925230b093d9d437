"""The edge: nginx in front of the API, uploads, downloads and assets.

One template, `nginx/nginx.conf.template`, rendered for a target: `native`
(scripts/run and the tests: local paths and ports) or `compose` (service
names and container paths), so both ways of running share one configuration.

Download links are checked by nginx itself (the `secure_link` module): the
app signs `{expires}{path} {secret}` with MD5 and nginx recomputes it with the
same secret, rendered into its configuration. docs/edge.md says why this and
not HMAC-SHA256 in njs.

Invariants of the rendered configuration: what goes to storage is built only
from captures of the raw request line checked against the app's own key
patterns (rendered in from app/platform/storage.py and format/mosis_format/validation.py), never
from nginx's decoded $uri or the client's query and headers; only the
allow-listed response headers of storage reach a client (nginx/headers.js,
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

from app.platform.config import LINK_SECRET_RE, ConfigError, MiB, Settings
from app.platform.storage import ASSET_KEY_RE, DELTA_KEY_RE, PACKAGE_KEY_RE, TEMP_KEY_RE, signed_host
from mosis_format.validation import PACKAGE_ID_RE

ROOT = Path(__file__).resolve().parents[2]
NGINX_DIR = ROOT / "nginx"
TEMPLATE = NGINX_DIR / "nginx.conf.template"
# The allow-list of storage's response headers (njs), written beside the
# rendered configuration.
HEADERS_JS = NGINX_DIR / "headers.js"
JS_MODULE = "ngx_http_js_module.so"
# Where Debian's nginx and the official image keep dynamic modules.
MODULES_DIR = "/usr/lib/nginx/modules"
CLOUDFLARE_IPS = NGINX_DIR / "cloudflare-ips.txt"

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
    extra_locations: str = ""  # more locations in the public server
    storage_scheme: str = "http"  # https: hosted S3, or TLS in front of storage
    modules_dir: str = MODULES_DIR

    @property
    def js_dir(self) -> Path:
        """Where nginx/headers.js is written: beside the configuration."""
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


# Grafana behind the edge (compose): resolved when asked, through Docker's
# DNS, so nginx starts whether or not Grafana is up yet.
GRAFANA_LOCATION = """\
        # Grafana, with its own login (compose).
        location /grafana/ {
            resolver 127.0.0.11 valid=30s;
            set $mosis_grafana http://grafana:3000;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $mosis_forwarded_proto;
            proxy_set_header X-Request-ID $request_id;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $mosis_connection_upgrade;
            proxy_pass $mosis_grafana;
        }
"""


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
        extra_locations=GRAFANA_LOCATION,
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

# Storage's headers that would make nginx act (redirect, rate, buffering).
_X_ACCEL = "X-Accel-Expires X-Accel-Redirect X-Accel-Limit-Rate X-Accel-Buffering X-Accel-Charset"

# The uploads location, which talks to storage itself.
STORAGE_REQUEST = """\
            # Storage is asked for exactly the key checked above: no header
            # and no query of the client's. Of its answer only allow-listed
            # headers pass (nginx/headers.js); its X-Accel headers decide
            # nothing.
            proxy_pass_request_headers off;
            proxy_set_header Connection "";
            proxy_set_header Host {storage_host};
            proxy_ignore_headers {x_accel};
            js_header_filter mosis.allow_listed;"""

# The cached locations, which fetch through the storage gateway.
GATEWAY_REQUEST = """\
            # Storage (through the gateway) is asked for exactly the key
            # checked above: no header and no query of the client's. Its
            # caching and X-Accel headers decide nothing.
            proxy_pass_request_headers off;
            proxy_set_header Connection "";
            proxy_ignore_headers Cache-Control Expires Set-Cookie Vary {x_accel};"""

# The gateway's locations on the internal server.
GATEWAY = """\
            if ($request_method !~ ^(GET|HEAD)$) {{
                return 405 '{{"error":{{"code":"method_not_allowed","message":"the gateway only reads"}}}}\\n';
            }}
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host {storage_host};
            # Paced by the edge that asks: nothing is buffered twice.
            proxy_buffering off;
            proxy_read_timeout 300s;
            proxy_ignore_headers {x_accel};
            js_header_filter mosis.allow_listed;
            proxy_pass {storage_scheme}://mosis_storage;"""

# Locations whose request line or storage URL carries a signature: nginx
# copies both into every error it logs, so these log nothing but what stops
# nginx itself; their failures show in the access log (status,
# upstream_status).
QUIET_ERROR_LOG = """\
            # A signature is in this request line or storage URL, and nginx
            # writes both into any error it logs (docs/edge.md, Logs).
            error_log {error_log} emerg;"""


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


def _lines(indent: int, items, fmt: str) -> str:
    return "\n".join(" " * indent + fmt.format(item) for item in items)


def _sections(text: str, flags: dict[str, bool]) -> str:
    """Keep one branch of each `# {{if NAME}} … # {{else NAME}} … # {{end NAME}}`."""
    def pick(m):
        return m.group(2) if flags[m.group(1)] else m.group(3)
    return re.sub(r"^[ \t]*# {{if (\w+)}}\n(.*?)^[ \t]*# {{else \1}}\n(.*?)^[ \t]*# {{end \1}}\n",
                  pick, text, flags=re.S | re.M)


def render(settings: Settings, target: Target, secret: str) -> str:
    """nginx.conf for `target`, from the template and `settings`."""
    _check_settings(settings)
    if not LINK_SECRET_RE.match(secret):
        raise ConfigError("the download link secret is not valid")
    trusted = cloudflare_networks() + list(settings.edge_trusted_proxies)
    tls = ""
    if settings.edge_tls_cert and target.tls_listen:
        tls = "\n".join([
            f"        listen {target.tls_listen} ssl http2 default_server;",
            f"        ssl_certificate {settings.edge_tls_cert};",
            f"        ssl_certificate_key {settings.edge_tls_key};",
            "        ssl_protocols TLSv1.2 TLSv1.3;",
            "        ssl_session_cache shared:mosis_tls:10m;",
        ])
    storage_tls = ""
    if target.storage_scheme == "https":
        # Hosted S3: SNI and the certificate checked for MOSIS_S3_ENDPOINT's name.
        storage_tls = "\n".join([
            "        proxy_ssl_server_name on;",
            f"        proxy_ssl_name {urlparse(settings.s3_endpoint).hostname};",
            "        proxy_ssl_verify on;",
            "        proxy_ssl_verify_depth 4;",
            f"        proxy_ssl_trusted_certificate {settings.s3_ca_file};",
            "        proxy_ssl_protocols TLSv1.2 TLSv1.3;",
            "        proxy_ssl_session_reuse on;",
        ])
    values = {
        "target": target.name,
        "user": f"user {target.user};" if target.user else "# workers run as the user starting nginx",
        "worker_processes": target.worker_processes,
        "worker_connections": target.worker_connections,
        "worker_rlimit_nofile": target.worker_rlimit_nofile,
        "js_module": f"{target.modules_dir}/{JS_MODULE}",
        "js_dir": target.js_dir,
        "package_key_re": _nginx_re(PACKAGE_KEY_RE),
        "delta_key_re": _nginx_re(DELTA_KEY_RE),
        "asset_key_re": _nginx_re(ASSET_KEY_RE),
        "temp_key_re": _nginx_re(TEMP_KEY_RE),
        "package_id_re": _nginx_re(PACKAGE_ID_RE),
        "upload_query_re": UPLOAD_QUERY_RE,
        "pid_file": target.pid_file,
        "error_log": target.error_log,
        "temp_dir": target.temp_dir,
        "access_log": target.access_log,
        "set_real_ip_from": _lines(4, trusted, "set_real_ip_from {};"),
        "trusted_proxy_geo": _lines(8, trusted, "{} 1;"),
        "api_rate": settings.edge_api_rate,
        "api_burst": settings.edge_api_burst,
        "cache_dir": target.cache_dir,
        "keys_zone": CACHE_KEYS_ZONE,
        "cache_max_bytes": settings.edge_cache_max_bytes,
        "app_servers": _lines(8, target.app_servers, "server {};"),
        "storage_servers": _lines(8, target.storage_servers, "server {};"),
        "asset_max_age": ASSET_MAX_AGE,
        "listen": target.listen,
        "tls": tls,
        "server_names": " ".join(server_names(settings)),
        "link_secret": secret,
        "quiet_error_log": QUIET_ERROR_LOG.format(error_log=target.error_log),
        "storage_request": STORAGE_REQUEST.format(storage_host=signed_host(settings), x_accel=_X_ACCEL),
        "gateway_request": GATEWAY_REQUEST.format(x_accel=_X_ACCEL),
        "gateway": GATEWAY.format(storage_host=signed_host(settings), storage_scheme=target.storage_scheme,
                                  x_accel=_X_ACCEL),
        "gateway_server": target.internal_listen if ":" in target.internal_listen
        else f"127.0.0.1:{target.internal_listen}",
        "storage_scheme": target.storage_scheme,
        "storage_tls": storage_tls,
        "bucket": settings.bucket,
        "bucket_re": re.escape(settings.bucket),
        "max_upload_bytes": settings.limits.max_package_bytes,
        "internal_listen": target.internal_listen,
        "internal_allow": _lines(8, target.internal_allow, "{} 1;"),
        "internal_allow_deny": _lines(12, (*(f"allow {n}" for n in target.internal_allow), "deny all"), "{};"),
        "extra_locations": target.extra_locations.rstrip("\n"),
        "api_max_body_bytes": max(2 * settings.max_asset_bytes, MiB),
    }
    text = _sections(TEMPLATE.read_text(), {"public_assets": settings.s3_public_assets})
    missing = sorted(set(re.findall(r"{{(\w+)}}", text)) - set(values))
    if missing:
        raise EdgeConfigError(f"the template needs values for {missing}")
    return re.sub(r"{{(\w+)}}", lambda m: str(values[m.group(1)]), text)


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
    """nginx/headers.js where the rendered configuration imports it from."""
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
    parser.add_argument("--http-port", type=int, default=int(os.environ.get("MOSIS_HTTP_PORT", "8080")))
    parser.add_argument("--internal-port", type=int,
                        default=int(os.environ.get("MOSIS_EDGE_INTERNAL_PORT", "8081")))
    parser.add_argument("--app", default=os.environ.get("MOSIS_APP_BIND", "127.0.0.1:8000"),
                        help="native: the API's address")
    parser.add_argument("--storage", default=os.environ.get("MOSIS_EDGE_STORAGE_SERVERS", ""),
                        help="compose: storage servers, comma-separated (default: MOSIS_EDGE_STORAGE_SERVERS, "
                             "else MOSIS_S3_ENDPOINT's)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.target == "native":
            target = native_target(settings, http_port=args.http_port, internal_port=args.internal_port,
                                   app_bind=args.app)
        else:
            if not settings.download_link_secret:
                # The app and the edge run in separate containers: a generated
                # secret would differ between them.
                raise ConfigError("set MOSIS_DOWNLOAD_LINK_SECRET: the app and the edge must share it")
            servers = tuple(s.strip() for s in args.storage.split(",") if s.strip())
            target = compose_target(settings, storage_servers=servers or None)
        secret = link_secret(settings)
        if args.out:
            # nginx/headers.js goes beside the file, where it is imported from.
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
