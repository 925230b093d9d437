"""The edge's configuration, links, purgers and trust, without the whole stack."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import json
import os
import re
import resource
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from flask import request

from app.edge import nginx as edge
from app.platform.config import ConfigError, Settings
from app.native import free_ports, start_edge
from app.edge.purge import CloudflarePurger, EdgePurger, PurgeError, edge_cache_path, public_read_keys, purgers_for
from app.platform.clock import utcnow
from tests.helpers import CloudflareStub

SECRET = "s" * 43
ROOT = Path(__file__).resolve().parent.parent


def settings_for(tmp_path, **changes) -> Settings:
    return Settings(data_dir=tmp_path / "data", **changes)


# -- links ------------------------------------------------------------------------


def test_link_signature_is_what_nginx_computes():
    # echo -n '2147483647/packages/a/package.mosis s3cr3t' | openssl md5 -binary \
    #   | openssl base64 | tr +/ -_ | tr -d =
    assert edge.link_signature("/packages/a/package.mosis", 2147483647, "s3cr3t") == "hkFsI2N1DoE5y-5IvUqv3g"
    link = edge.signed_link("https://cdn.example.com/", "packages/a/package.mosis", "s3cr3t", 2147483647)
    assert link == "https://cdn.example.com/packages/a/package.mosis?expires=2147483647&md5=hkFsI2N1DoE5y-5IvUqv3g"


def test_link_secret_is_generated_once_and_kept_private(tmp_path):
    settings = settings_for(tmp_path)
    first = edge.link_secret(settings)
    assert re.match(r"^[A-Za-z0-9_-]{32,}$", first)
    path = settings.data_dir / edge.LINK_SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert edge.link_secret(settings) == first
    assert edge.link_secret(settings.replace(download_link_secret=SECRET)) == SECRET
    with pytest.raises(ConfigError):
        Settings.from_env({"MOSIS_DOWNLOAD_LINK_SECRET": "short"})
    with pytest.raises(ConfigError):
        Settings.from_env({"MOSIS_DOWNLOAD_LINK_SECRET": "x" * 40 + '";'})


def test_download_links_point_at_the_edge_and_expire_after_the_ttl(services):
    key = "packages/" + "a" * 32 + "/" + "b" * 32 + "/3/package.mosis"
    link = services.download_link(key, now=1_700_000_000)
    expires = 1_700_000_000 + services.settings.download_url_ttl
    assert link == edge.signed_link(services.settings.resolved_cdn_url, key, services.download_link_secret,
                                    expires)


# -- rendering ---------------------------------------------------------------------


def native(settings, tmp_path, **kw):
    return edge.native_target(settings, http_port=18080, internal_port=18081, app_bind="127.0.0.1:18000",
                              prefix=tmp_path / "edge", **kw)


def test_native_config_renders_checks_and_keeps_its_secret_private(tmp_path):
    settings = settings_for(tmp_path, s3_endpoint="http://127.0.0.1:18333", bucket="mosis",
                            public_url="https://api.example.com", cdn_url="https://cdn.example.com",
                            s3_public_endpoint="https://s3.example.com",
                            edge_trusted_proxies=("10.1.0.0/16",))
    target = native(settings, tmp_path)
    conf = edge.write_config(settings, target, SECRET)
    text = conf.read_text()
    assert not re.search(r"{{\w+}}", text)
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    edge.nginx_test(conf, target.prefix)
    assert "server_name api.example.com cdn.example.com s3.example.com;" in text
    assert "listen 127.0.0.1:18080 default_server;" in text and "listen 127.0.0.1:18081;" in text
    assert "server 127.0.0.1:18000;" in text and "server 127.0.0.1:18333;" in text
    assert "proxy_set_header Host 127.0.0.1:18333;" in text  # the host storage URLs are signed for
    assert f'secure_link_md5 "$secure_link_expires/$mosis_package_path {SECRET}";' in text
    assert text.count(SECRET) == 1
    assert f"client_max_body_size {settings.limits.max_package_bytes};" in text
    assert f"max_size={settings.edge_cache_max_bytes}" in text
    assert '"~^/mosis/temp/' in text or "^/mosis/temp/" in text
    for net in edge.cloudflare_networks() + ["10.1.0.0/16"]:
        assert f"set_real_ip_from {net};" in text and f"        {net} 1;" in text
    assert str(tmp_path / "data" / "logs" / "edge-access.log") in text


def test_compose_config_uses_service_names_and_passes_nginx(tmp_path):
    settings = settings_for(tmp_path, s3_endpoint="http://minio1:9000", public_url="https://store.example.com",
                            edge_tls_cert="/etc/mosis/tls/origin.pem", edge_tls_key="/etc/mosis/tls/origin.key")
    target = edge.compose_target(settings, storage_servers=("minio1:9000", "minio2:9000"))
    text = edge.render(settings, target, SECRET)
    assert "server app:8000;" in text and "server minio1:9000;" in text and "server minio2:9000;" in text
    assert "listen 8080 default_server;" in text and "listen 8443 ssl http2 default_server;" in text
    assert "listen 8081;" in text and "allow 172.16.0.0/12;" in text
    assert "proxy_set_header Host minio1:9000;" in text
    assert "proxy_cache_path /var/cache/mosis/cache " in text and "user nginx;" in text
    # where the scheduler reads it (compose.yaml's MOSIS_EDGE_ACCESS_LOG)
    assert "access_log /var/log/mosis/edge-access.log mosis_json;" in text
    assert "location /grafana/ {" in text and "resolver 127.0.0.11" in text
    edge.check(settings.replace(edge_tls_cert="", edge_tls_key=""), target, SECRET)


def test_compose_runs_the_rendered_edge():
    """compose.yaml renders the config with the app image and nginx runs it."""
    import yaml

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    render, nginx = services["edge-config"], services["nginx"]
    assert render["command"][:5] == ["python", "-m", "app.edge", "--target", "compose"]
    out = render["command"][render["command"].index("--out") + 1]
    assert nginx["command"][:3] == ["nginx", "-c", out]
    assert f"edge-config:{Path(out).parent}:ro" in nginx["volumes"]
    assert nginx["depends_on"]["edge-config"] == {"condition": "service_completed_successfully"}
    target = edge.compose_target(Settings())
    mounts = {v.split(":")[1]: v.split(":")[0] for v in nginx["volumes"]}
    assert Path(target.cache_dir).parent.as_posix() in mounts and Path(target.access_log).parent.as_posix() in mounts
    assert nginx["ports"] == ["${MOSIS_HTTP_PORT:-80}:" + target.listen]
    app_env = services["app"]["environment"]
    assert app_env["MOSIS_EDGE_INTERNAL_URL"] == f"http://nginx:{target.internal_listen}"
    assert "MOSIS_DOWNLOAD_LINK_SECRET" in app_env and "MOSIS_DOWNLOAD_LINK_SECRET" in render["environment"]
    assert services["scheduler"]["environment"]["MOSIS_EDGE_ACCESS_LOG"] == target.access_log
    # The image renders it with the template and files installed as package data.
    assert re.search(r"^COPY (--chown=\S+ )?app /srv/mosis/app$", (ROOT / "Dockerfile").read_text(), re.M)


def test_the_template_and_its_files_are_package_data():
    """An installed package (the image's venv, a wheel) renders the edge:
    every file the renderer reads lies in app/edge and pyproject.toml ships it."""
    import fnmatch
    import tomllib

    package = Path(edge.__file__).parent
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["app.edge"]
    for path in (edge.TEMPLATE, edge.HEADERS_JS, edge.CLOUDFLARE_IPS):
        assert path.is_relative_to(package), path
        assert any(fnmatch.fnmatch(path.relative_to(package).as_posix(), g) for g in globs), path


def test_compose_render_refuses_without_a_shared_secret(tmp_path):
    env = {**os.environ, "MOSIS_DATA_DIR": str(tmp_path / "data")}
    env.pop("MOSIS_DOWNLOAD_LINK_SECRET", None)
    proc = subprocess.run([sys.executable, "-m", "app.edge", "--target", "compose"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "MOSIS_DOWNLOAD_LINK_SECRET" in proc.stderr


def test_a_broken_template_value_is_caught_by_nginx(tmp_path):
    settings = settings_for(tmp_path)
    bad = dataclasses.replace(native(settings, tmp_path), listen="127.0.0.1:notaport")
    conf = edge.write_config(settings, bad, SECRET)
    with pytest.raises(edge.EdgeConfigError, match="notaport"):
        edge.nginx_test(conf, bad.prefix)


@pytest.mark.parametrize("target", ["native", "compose"])
@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls"])
@pytest.mark.parametrize("assets", [True, False], ids=["public-assets", "private-assets"])
@pytest.mark.parametrize("storage", ["http://127.0.0.1:18333", "https://acct.r2.cloudflarestorage.com"],
                         ids=["http-storage", "https-storage"])
def test_every_target_and_option_renders_what_nginx_accepts(tmp_path, target, tls, assets, storage):
    cert, key = self_signed(tmp_path / "tls") if tls else ("", "")
    settings = settings_for(tmp_path, s3_endpoint=storage, s3_public_assets=assets, public_url="https://store.example.com",
                            edge_tls_cert=str(cert), edge_tls_key=str(key), edge_trusted_proxies=("10.1.0.0/16",))
    chosen = (native(settings, tmp_path, tls_port=18443) if target == "native"
              else edge.compose_target(settings, storage_servers=("127.0.0.1:18333", "127.0.0.1:18334")
                                       if storage.startswith("http:") else None))
    text = edge.render(settings, chosen, SECRET)
    assert not re.search(r"\{\{|\{%|%\}|\{#", text), "template syntax left in the output"
    assert "\n\n\n" not in text
    assert ("listen 127.0.0.1:18443 ssl http2" in text or "listen 8443 ssl http2" in text) == tls
    assert ("proxy_ssl_verify on;" in text) == storage.startswith("https:")
    assert ("location @mosis_asset_origin {" in text) == (not assets)
    assert ("location /grafana/ {" in text) == (target == "compose")
    edge.check(settings, chosen, SECRET)


def test_a_template_naming_an_unknown_value_is_refused(tmp_path, monkeypatch):
    (tmp_path / "nginx.conf.j2").write_text("worker_processes {{ target.worker_processes }};\n"
                                            "pid {{ pid_file_of_old }};\n")
    monkeypatch.setattr(edge, "TEMPLATES", tmp_path)
    settings = settings_for(tmp_path)
    with pytest.raises(edge.EdgeConfigError, match="pid_file_of_old"):
        edge.render(settings, native(settings, tmp_path), SECRET)


@pytest.mark.parametrize("changes, message", [
    ({"bucket": "packages"}, "bucket"),
    ({"bucket": "Bad_Bucket"}, "bucket"),
    ({"cdn_url": "https://cdn.example.com/mosis"}, "MOSIS_CDN_URL"),
    ({"public_url": "ftp://example.com"}, "MOSIS_PUBLIC_URL"),
    ({"edge_tls_cert": "/x.pem"}, "MOSIS_EDGE_TLS_KEY"),
])
def test_settings_the_edge_cannot_serve_are_refused(tmp_path, changes, message):
    settings = settings_for(tmp_path, **changes)
    with pytest.raises(ConfigError, match=message):
        edge.render(settings, native(settings, tmp_path), SECRET)


def test_trusted_proxies_must_be_networks():
    with pytest.raises(ConfigError, match="MOSIS_EDGE_TRUSTED_PROXIES"):
        Settings.from_env({"MOSIS_EDGE_TRUSTED_PROXIES": "10.0.0.0/8, example.com"})


def test_cli_renders_the_compose_config(tmp_path):
    out = tmp_path / "nginx.conf"
    env = {**os.environ, "MOSIS_DATA_DIR": str(tmp_path / "data"), "MOSIS_S3_ENDPOINT": "http://minio1:9000",
           "MOSIS_DOWNLOAD_LINK_SECRET": SECRET}
    proc = subprocess.run([sys.executable, "-m", "app.edge", "--target", "compose", "--check", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "server minio1:9000;" in out.read_text()
    # The allow-list of storage's headers goes where the file imports it from.
    assert (tmp_path / "headers.js").read_bytes() == edge.HEADERS_JS.read_bytes()
    assert f'js_path "{tmp_path}";' in out.read_text()
    proc = subprocess.run([sys.executable, "-m", "app.edge"], capture_output=True, text=True, timeout=60,
                          env={**env, "MOSIS_S3_BUCKET": "v1"})
    assert proc.returncode == 1 and "bucket" in proc.stderr


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return directory / "cert.pem", directory / "key.pem"


def test_tls_at_the_edge(tmp_path):
    self_signed(tmp_path)
    http_port, internal_port, tls_port = free_ports(3)
    settings = settings_for(tmp_path, download_link_secret=SECRET, edge_tls_cert=str(tmp_path / "cert.pem"),
                            edge_tls_key=str(tmp_path / "key.pem"))
    service = start_edge(settings, http_port=http_port, internal_port=internal_port,
                         app_bind=f"127.0.0.1:{free_ports(1)[0]}", log_dir=tmp_path / "logs",
                         tls_port=tls_port)
    try:
        service.wait_ready(30)
        r = requests.get(f"https://127.0.0.1:{tls_port}/nothing", verify=str(tmp_path / "cert.pem"), timeout=10)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        # Nothing listens behind it: the API's absence is a clean JSON 502.
        r = requests.get(f"https://127.0.0.1:{tls_port}/v1/signing-key", verify=str(tmp_path / "cert.pem"),
                         timeout=10)
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unavailable"
    finally:
        service.stop()


# -- purgers ----------------------------------------------------------------------


def test_edge_cache_path_is_nginx_levels_1_2_of_the_key_md5():
    # The cache key is the object key (or API path), without a leading slash:
    # md5("a/b") = a7e86136543b019d72468ceebf71fb8e
    assert edge_cache_path("a/b") == "e/b8/a7e86136543b019d72468ceebf71fb8e"
    assert edge_cache_path("/a/b") == edge_cache_path("a/b")


def test_cloudflare_purger_batches_and_reports_failures():
    stub = CloudflareStub()
    try:
        purger = CloudflarePurger(stub.url, "zone-9", "token-9", "https://cdn.example.com/",
                                  "https://api.example.com")
        keys = [f"assets/app/screenshots/{i}.png" for i in range(64)] + ["v1/packages/com.example.app"]
        purger(keys)
        assert [len(c["body"]["files"]) for c in stub.calls] == [30, 30, 5]
        assert stub.calls[0]["body"]["files"][0] == "https://cdn.example.com/assets/app/screenshots/0.png"
        # Public API reads live at the API's URL.
        assert stub.calls[2]["body"]["files"][-1] == "https://api.example.com/v1/packages/com.example.app"
        assert {c["path"] for c in stub.calls} == {"/client/v4/zones/zone-9/purge_cache"}
        assert {c["authorization"] for c in stub.calls} == {"Bearer token-9"}
        stub.fail = True
        with pytest.raises(PurgeError, match="500"):
            purger(["packages/x"])
    finally:
        stub.close()


def test_purgers_follow_the_configuration(tmp_path):
    assert purgers_for(settings_for(tmp_path)) == []
    both = purgers_for(settings_for(tmp_path, edge_internal_url="http://127.0.0.1:1",
                                    cloudflare_zone_id="z", cloudflare_api_token="t"))
    assert [p.__name__ for p in both] == ["purge_edge", "purge_cloudflare"]
    only_zone = purgers_for(settings_for(tmp_path, cloudflare_zone_id="z"))
    assert only_zone == []
    with pytest.raises(PurgeError):
        EdgePurger(f"http://127.0.0.1:{free_ports(1)[0]}")(["packages/x"])


# -- Cloudflare's ranges, Flask behind the edge --------------------------------------------


def test_refreshing_cloudflare_ranges(tmp_path):
    # The repository's layout: the script in nginx/, the list it updates in the package.
    nginx_dir = tmp_path / "nginx"
    nginx_dir.mkdir()
    shutil.copy(ROOT / "nginx" / "refresh-cloudflare-ips", nginx_dir)
    ips = tmp_path / edge.CLOUDFLARE_IPS.relative_to(ROOT)
    ips.parent.mkdir(parents=True)
    shutil.copy(edge.CLOUDFLARE_IPS, ips)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "ips-v4").write_text("\n".join(f"198.51.{i}.0/24" for i in range(12)) + "\n")
    (lists / "ips-v6").write_text("2001:db8::/32\n")
    script = [sys.executable, str(nginx_dir / "refresh-cloudflare-ips")]
    run = lambda: subprocess.run(script, env={**os.environ, "CLOUDFLARE_IPS_BASE": lists.as_uri()},
                                 capture_output=True, text=True, timeout=60)
    assert run().returncode == 0
    nets = edge.cloudflare_networks(ips)
    assert nets == [f"198.51.{i}.0/24" for i in range(12)] + ["2001:db8::/32"]
    assert ips.read_text().startswith("# Cloudflare's edge address ranges")

    (lists / "ips-v4").write_text("0.0.0.0/0\n" + (lists / "ips-v4").read_text())
    refused = run()
    assert refused.returncode == 1 and "refusing" in refused.stderr
    assert edge.cloudflare_networks(ips) == nets  # kept


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_flask_believes_one_proxy_hop(services):
    from app import create_app

    def whoami_app(hops):
        flask_app = create_app(services.settings.replace(proxy_hops=hops), services=services)
        flask_app.add_url_rule("/whoami", "whoami", lambda: {"addr": request.remote_addr,
                                                            "scheme": request.scheme})
        return flask_app.test_client()

    headers = {"X-Forwarded-For": "198.51.100.1, 203.0.113.5", "X-Forwarded-Proto": "https"}
    assert whoami_app(1).get("/whoami", headers=headers).json == {"addr": "203.0.113.5", "scheme": "https"}
    assert whoami_app(0).get("/whoami", headers=headers).json == {"addr": "127.0.0.1", "scheme": "http"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_recent_pulls_are_purged_again(api, client, services):
    from app.catalog.packages import purge_recent_pulls
    from tests.helpers import ADMIN

    dev = api.new_developer()
    app = api.create_app(dev)
    version = api.ship(dev, app, 1)
    other = api.ship(dev, api.create_app(dev), 1)  # published, not pulled
    purged: list[list[str]] = []
    services.cache_purgers.append(purged.append)
    r = client.post(f"/v1/admin/versions/{version['id']}/pull", json={"reason": "x"}, headers=ADMIN)
    assert r.status_code == 200 and len(purged) == 1  # the pull's own purge
    keys = purged[0]
    assert keys[0].endswith("/package.mosis") and app["id"] in keys[0]
    # and the public reads that named it, also as asked by devices that have it (a delta's source),
    # the catalog index among them
    assert keys[2:] == [f"v1/packages/{app['package_id']}", f"v1/packages/{app['package_id']}/download",
                        f"v1/packages/{app['package_id']}/download?from_version_code=1", "v1/index.json"]

    assert purge_recent_pulls(services, utcnow()) == 1
    assert purged[1:] == [keys]
    assert purge_recent_pulls(services, utcnow() + dt.timedelta(minutes=11)) == 0
    assert len(purged) == 2 and other["id"] != version["id"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_superseded_versions_retention_purged_are_purged_again(api, services):
    from app.platform.models import Version
    from app.catalog.deltas import keys_touching
    from app.catalog.packages import held_codes, keys_of, purge_recent_pulls
    from app.housekeeping.retention import run_retention
    from tests.housekeeping_helpers import version_in

    _, _, superseded = version_in(api, "superseded")
    _, _, draft = version_in(api, "draft")  # never servable: nothing to purge again
    now = utcnow() + dt.timedelta(days=400)
    assert {i["version_id"] for i in run_retention(services, now)["items"]} == {superseded, draft}
    purged: list[list[str]] = []
    services.cache_purgers.append(purged.append)
    assert purge_recent_pulls(services, now + dt.timedelta(minutes=1)) == 1
    version = Version.get_by_id(superseded)
    # its package, the patches to and from it, and the public reads that named it
    patches = keys_touching(version)
    assert patches == [f"deltas/{version.app.developer_id}/{version.app_id}/1-2.patch"]
    assert purged == [[*keys_of(version), *patches,
                       *public_read_keys(version.app.package_id, held_codes(version.app))]]
    assert purge_recent_pulls(services, now + dt.timedelta(minutes=11)) == 0


def test_hosted_https_storage_renders_tls_and_the_signed_host(tmp_path):
    settings = settings_for(tmp_path, s3_endpoint="https://acct.r2.cloudflarestorage.com", s3_region="auto",
                            public_url="https://store.example.com", s3_public_assets=False,
                            download_link_secret=SECRET)
    target = edge.compose_target(settings, storage_servers=("https://acct.r2.cloudflarestorage.com",))
    text = edge.render(settings, target, SECRET)
    assert "server acct.r2.cloudflarestorage.com:443;" in text
    # The Host the SDK signs for: no default port.
    assert "proxy_set_header Host acct.r2.cloudflarestorage.com;" in text
    assert "proxy_set_header Host $http_host;" not in text
    for line in ("proxy_ssl_server_name on;", "proxy_ssl_name acct.r2.cloudflarestorage.com;",
                 "proxy_ssl_verify on;", f"proxy_ssl_trusted_certificate {settings.s3_ca_file};"):
        assert line in text
    # Storage is reached over TLS only: by the uploads location and by the
    # gateway the cached locations fetch through (its two locations).
    assert "proxy_pass http://mosis_storage" not in text and text.count("proxy_pass https://mosis_storage") == 3
    assert text.count("proxy_pass http://mosis_gateway/") == 3
    # Private assets: the app is asked on a miss, storage is read signed.
    assert "location @mosis_asset_origin {" in text and "{{" not in text
    assert "proxy_pass http://mosis_gateway/mosis/$mosis_asset_key;" not in text
    edge.check(settings, target, SECRET)

    public = edge.render(settings.replace(s3_endpoint="http://minio1:9000", s3_public_assets=True),
                         edge.compose_target(settings.replace(s3_endpoint="http://minio1:9000")), SECRET)
    assert "proxy_ssl_verify" not in public and "@mosis_asset_origin" not in public
    assert "proxy_pass http://mosis_gateway/mosis/$mosis_asset_key;" in public


def test_storage_servers_schemes():
    settings = Settings(s3_endpoint="https://s3.eu-central-1.amazonaws.com")
    assert edge.storage_upstream(settings) == ("https", ("s3.eu-central-1.amazonaws.com:443",))
    assert edge.storage_upstream(settings, ("s3.eu-central-1.amazonaws.com:443",)) == (
        "https", ("s3.eu-central-1.amazonaws.com:443",))
    plain = Settings(s3_endpoint="http://minio1:9000")
    assert edge.storage_upstream(plain, ("minio1:9000", "http://minio2:9000")) == (
        "http", ("minio1:9000", "minio2:9000"))
    with pytest.raises(ConfigError, match="all speak http or all https"):
        edge.storage_upstream(plain, ("minio1:9000", "https://minio2:9000"))
    with pytest.raises(ConfigError):
        edge.storage_upstream(plain, ("ftp://minio1:9000",))


def test_the_edge_drops_idle_app_connections_before_gunicorn_does(tmp_path):
    # nginx must give up an idle upstream connection before gunicorn closes
    # it; otherwise a request sent at that moment meets a closed socket.
    import runpy
    gunicorn_keepalive = runpy.run_path(str(Path(edge.__file__).parents[1] / "gunicorn_conf.py"))["keepalive"]
    settings = settings_for(tmp_path, s3_endpoint="http://127.0.0.1:18333")
    text = edge.write_config(settings, native(settings, tmp_path), SECRET).read_text()
    app_upstream = re.search(r"upstream mosis_app \{(.*?)\}", text, re.S).group(1)
    timeout = re.search(r"keepalive_timeout (\d+)s;", app_upstream)
    assert timeout, "the app upstream sets no keepalive_timeout (nginx's default is 60 s)"
    assert int(timeout.group(1)) < gunicorn_keepalive


# -- the analyser, limits -----------------------------------------------------------------

GIXY_ALLOW = ROOT / "nginx" / "gixy-allow.toml"


def gixy_findings(conf: Path) -> list[dict]:
    """gixy-ng's HIGH and MEDIUM findings on a rendered file, each with the
    locations its report names."""
    from app.native import venv_bin

    proc = subprocess.run([venv_bin("gixy"), "-f", "json", str(conf)], capture_output=True, text=True,
                          timeout=300)
    try:
        found = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"gixy gave no report:\n{proc.stdout}\n{proc.stderr}") from None
    return [{"plugin": f["plugin"], "severity": f["severity"], "reason": f["reason"],
             "locations": set(re.findall(r"location\s+(?:[=~^*]+\s+)?(\S+)\s*\{", f.get("config", "")))}
            for f in found if f["severity"] in ("HIGH", "MEDIUM")]


def test_gixy_finds_nothing_that_is_not_allowed_with_a_reason(tmp_path):
    import tomllib

    allowed = tomllib.loads(GIXY_ALLOW.read_text())["finding"]
    assert all(entry["reason"].strip() and entry["locations"] for entry in allowed)
    base = settings_for(tmp_path, s3_endpoint="http://minio1:9000")
    renders = {
        "native": (base, native(base, tmp_path / "native")),
        "native, private assets": (base.replace(s3_public_assets=False),
                                   native(base, tmp_path / "private")),
        "compose": (base, edge.compose_target(base, storage_servers=("minio1:9000", "minio2:9000"))),
    }
    used = set()
    problems = []
    for name, (settings, target) in renders.items():
        conf = tmp_path / name.replace(" ", "").replace(",", "-") / "nginx.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(edge.render(settings, target, SECRET))
        for finding in gixy_findings(conf):
            matches = [i for i, entry in enumerate(allowed) if entry["plugin"] == finding["plugin"]
                       and finding["locations"] <= set(entry["locations"])]
            if not matches:
                problems.append((name, finding))
            used.update(matches)
    assert not problems, problems
    assert used == set(range(len(allowed))), "entries of gixy-allow.toml nothing matches any more"


def test_workers_may_open_what_their_connections_need(tmp_path):
    settings = settings_for(tmp_path)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    for target in (native(settings, tmp_path), edge.compose_target(settings)):
        text = edge.render(settings, target, SECRET)
        connections = int(re.search(r"worker_connections (\d+);", text).group(1))
        files = int(re.search(r"worker_rlimit_nofile (\d+);", text).group(1))
        assert files >= 2 * connections, target.name
    assert native(settings, tmp_path).worker_rlimit_nofile <= hard


def test_public_read_lifetimes_leave_download_links_time(tmp_path):
    assert Settings.from_env({}).public_read_interval == 10
    with pytest.raises(ConfigError, match="MOSIS_PUBLIC_READ_MAX_AGE_SECONDS"):
        Settings.from_env({"MOSIS_DOWNLOAD_URL_TTL_SECONDS": "600", "MOSIS_PUBLIC_READ_MAX_AGE_SECONDS": "290",
                           "MOSIS_PUBLIC_READ_STALE_SECONDS": "20"})
    ok = Settings.from_env({"MOSIS_PUBLIC_READ_MAX_AGE_SECONDS": "0", "MOSIS_PUBLIC_STATIC_MAX_AGE_SECONDS": "60"})
    assert (ok.public_read_max_age, ok.public_static_max_age) == (0, 60)
