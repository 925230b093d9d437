"""Another S3 server by configuration alone (docs/deploy.md, Using another S3 server).

Hosted S3 speaks HTTPS: a TLS-terminating nginx with a certificate made here
stands in front of the session's SeaweedFS, and the app and the edge reach
storage through it. Providers that refuse anonymous reads are a bucket
without a policy, served in the private-assets mode. Providers that refuse
bucket policies and lifecycle rules are a small proxy in front of SeaweedFS
that answers 501 NotImplemented to those calls and forwards the rest.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import threading
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.edge.nginx import nginx_binary
from app.platform.errors import Unavailable
from app.native import free_port, free_ports, spawn, start_edge
from app.platform.storage import Storage, StorageSetupError, assets_public_policy
from tests.helpers import HttpApi
from tests.s3_proxy import NOT_IMPLEMENTED
from tests.images import encode, icon
from tests.stack import edge_settings, start_live_stack
from tests.test_edge import shipped

# Storage is what differs here; one database is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


# -- a certificate authority and a TLS front for the storage server -------------------------

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory: Path, cn: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    path = directory / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def make_server_cert(directory: Path, ca_key, ca_cert) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (an IP and a DNS name: Python checks the
    one, nginx the other)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("127.0.0.1")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / "storage.pem", directory / "storage.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


TLS_FRONT = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # As a hosted endpoint: the request reaches storage as it came.
            proxy_set_header Host $http_host;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_pass http://127.0.0.1:{upstream};
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def tls_storage(weed, tmp_path_factory):
    """SeaweedFS behind HTTPS, with the CA that signs its certificate and one that does not."""
    base = tmp_path_factory.mktemp("tls-front")
    ca, ca_key, ca_cert = make_ca(base, "mosis-test-ca")
    stranger, _, _ = make_ca(base, "another-ca")
    cert, key = make_server_cert(base, ca_key, ca_cert)
    port = free_port()
    conf = base / "nginx.conf"
    conf.write_text(TLS_FRONT.format(prefix=base, port=port, cert=cert, key=key, upstream=weed.ports.s3))
    service = spawn("tls-front", [nginx_binary(), "-p", str(base), "-c", str(conf), "-e", "stderr",
                                  "-g", "daemon off;"], base / "logs")
    service.url, service.ca, service.stranger = f"https://127.0.0.1:{port}", str(ca), str(stranger)
    service.access_log = base / "access.log"
    try:
        for _ in range(100):
            try:
                requests.get(service.url, verify=service.ca, timeout=2)
                break
            except requests.ConnectionError:
                if not service.alive():
                    raise RuntimeError(f"the TLS front exited:\n{service.tail()}")
                threading.Event().wait(0.1)
        yield service
    finally:
        service.stop()


def _requests_seen(front) -> int:
    return len(front.access_log.read_text().splitlines()) if front.access_log.exists() else 0


# -- HTTPS storage behind the edge -----------------------------------------------------------

def test_https_storage_behind_the_edge(settings, tls_storage, tmp_path):
    hosted = settings.replace(s3_endpoint=tls_storage.url, s3_ca_file=tls_storage.ca)
    stack = start_live_stack(edge_settings(hosted, *free_ports(2)),
                             extra_env={"MOSIS_S3_CA_FILE": tls_storage.ca})
    try:
        conf = stack.edge.target.conf_path.read_text()
        assert "proxy_pass https://mosis_storage" in conf and "proxy_ssl_verify on;" in conf
        assert f"proxy_ssl_trusted_certificate {tls_storage.ca};" in conf
        http = HttpApi(stack.edge_url)
        before = _requests_seen(tls_storage)
        # The upload goes through the edge, which relays it over HTTPS.
        _, app, _, data = shipped(http)
        assert _requests_seen(tls_storage) > before

        url = http.download_info(app["package_id"])["download_url"]
        first, second = requests.get(url, timeout=30), requests.get(url, timeout=30)
        assert first.status_code == 200 and first.content == data
        assert first.headers["X-Cache-Status"] == "MISS"
        assert second.status_code == 200 and second.content == data
        assert second.headers["X-Cache-Status"] == "HIT"

        dev = http.new_developer()
        icon_app = http.create_app(dev)
        icons = http.call("PUT", f"/v1/apps/{icon_app['id']}/icon", 200, headers=dev["headers"],
                          files={"icon": ("icon.png", encode(icon(256), "PNG"), "image/png")}).json()["icons"]
        first, second = requests.get(icons["64"], timeout=30), requests.get(icons["64"], timeout=30)
        assert first.status_code == 200 and first.headers["X-Cache-Status"] == "MISS"
        assert first.headers["Content-Type"] == "image/png" and first.content.startswith(b"\x89PNG")
        assert second.status_code == 200 and second.headers["X-Cache-Status"] == "HIT"
        assert second.content == first.content

        # A second edge that does not trust storage's certificate: nothing
        # leaves storage through it.
        http_port, internal_port = free_ports(2)
        untrusting = stack.settings.replace(s3_ca_file=tls_storage.stranger,
                                            public_url=f"http://127.0.0.1:{http_port}",
                                            edge_internal_url=f"http://127.0.0.1:{internal_port}")
        other = start_edge(untrusting, http_port=http_port, internal_port=internal_port,
                           app_bind=stack.env["MOSIS_APP_BIND"], prefix=tmp_path / "edge2",
                           log_dir=tmp_path / "logs2")
        try:
            other.wait_ready(60)
            other_url = f"http://127.0.0.1:{http_port}"
            package = requests.get(other_url + url[len(stack.settings.resolved_cdn_url):], timeout=30)
            asset = requests.get(other_url + urlparse(icons["128"]).path, timeout=30)
            assert package.status_code == 502 and asset.status_code == 502
            assert "upstream SSL certificate verify error" in (tmp_path / "logs2" / "edge-error.log").read_text()
        finally:
            other.stop()
    finally:
        stack.stop()


def test_the_app_checks_storage_certificate(settings, tls_storage):
    trusted = Storage(settings.replace(s3_endpoint=tls_storage.url, s3_ca_file=tls_storage.ca))
    trusted.ping()
    untrusted = Storage(settings.replace(s3_endpoint=tls_storage.url, s3_ca_file=tls_storage.stranger))
    with pytest.raises(Unavailable):
        untrusted.ping()


# -- assets without anonymous reads ------------------------------------------------------------

def test_private_assets_through_the_app(settings, weed):
    bucket = f"mosis-private-{uuid.uuid4().hex[:8]}"
    private = settings.replace(bucket=bucket, s3_public_assets=False)
    stack = start_live_stack(edge_settings(private, *free_ports(2)),
                             extra_env={"MOSIS_S3_PUBLIC_ASSETS": "false"})
    try:
        http = HttpApi(stack.edge_url)
        dev = http.new_developer()
        app = http.create_app(dev)
        icons = http.call("PUT", f"/v1/apps/{app['id']}/icon", 200, headers=dev["headers"],
                          files={"icon": ("icon.png", encode(icon(256), "PNG"), "image/png")}).json()["icons"]
        key = urlparse(icons["32"]).path.lstrip("/")
        # Storage refuses anonymous reads of this bucket: the public path could not serve it.
        assert requests.get(f"{weed.endpoint}/{bucket}/{key}", timeout=30).status_code == 403

        first, second = requests.get(icons["32"], timeout=30), requests.get(icons["32"], timeout=30)
        assert first.status_code == 200 and first.headers["X-Cache-Status"] == "MISS"
        assert first.headers["Content-Type"] == "image/png" and first.content.startswith(b"\x89PNG")
        assert first.headers["Cache-Control"].startswith("public, max-age=")
        assert second.status_code == 200 and second.headers["X-Cache-Status"] == "HIT"
        assert second.content == first.content
        # The app was asked once, on the miss.
        entries = [e for e in stack.log_entries() if e["uri"] == "/" + key]
        assert [e["cache"] for e in entries] == ["MISS", "HIT"]

        missing = requests.get(icons["32"].replace("/icons/1/", "/icons/99/"), timeout=30)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

        # Packages still need their signed link.
        _, papp, _, data = shipped(http)
        url = http.download_info(papp["package_id"])["download_url"]
        assert requests.get(url, timeout=30).content == data
        assert requests.get(url.split("?")[0], timeout=30).status_code == 403
    finally:
        stack.stop()


# -- a provider that refuses bucket policies and lifecycle rules -------------------------------

def test_ensure_bucket_tolerates_refused_policy_and_lifecycle(settings, refusing, caplog):
    proxy = refusing({"policy": NOT_IMPLEMENTED, "lifecycle": NOT_IMPLEMENTED})
    bucket = f"mosis-hosted-{uuid.uuid4().hex[:8]}"
    storage = Storage(settings.replace(s3_endpoint=proxy.url, bucket=bucket))
    with caplog.at_level(logging.WARNING, logger="app.platform.storage"):
        storage.ensure_bucket()
    assert "policy" in proxy.refused and "lifecycle" in proxy.refused
    text = caplog.text
    assert "refuses the bucket policy" in text and "MOSIS_S3_PUBLIC_ASSETS=false" in text
    assert "refuses lifecycle rules" in text and "temp/" in text
    storage.put("assets/x/probe.txt", b"hello")  # and the bucket works
    assert storage.read_range("assets/x/probe.txt", 0, 5) == b"hello"
    storage.delete("assets/x/probe.txt")


def test_private_assets_mode_sets_no_policy(settings, refusing, caplog):
    proxy = refusing({"policy": NOT_IMPLEMENTED})
    storage = Storage(settings.replace(s3_endpoint=proxy.url, s3_public_assets=False,
                                       bucket=f"mosis-hosted-{uuid.uuid4().hex[:8]}"))
    with caplog.at_level(logging.WARNING, logger="app.platform.storage"):
        storage.ensure_bucket()
    assert "policy" not in proxy.refused and "bucket policy" not in caplog.text


def test_a_bucket_made_by_hand_is_enough(settings, weed, refusing):
    bucket = f"mosis-hosted-{uuid.uuid4().hex[:8]}"
    Storage(settings.replace(bucket=bucket, s3_public_assets=False)).ensure_bucket()  # "by hand"
    proxy = refusing({"create": (403, "AccessDenied"), "policy": (403, "AccessDenied"),
                      "lifecycle": NOT_IMPLEMENTED})
    storage = Storage(settings.replace(s3_endpoint=proxy.url, bucket=bucket))
    storage.ensure_bucket()
    assert "create" not in proxy.refused and "policy" in proxy.refused

    missing = Storage(settings.replace(s3_endpoint=proxy.url, bucket=f"mosis-hosted-{uuid.uuid4().hex[:8]}"))
    with pytest.raises(StorageSetupError, match="create it by hand"):
        missing.ensure_bucket()
    assert "create" in proxy.refused


def test_wrong_credentials_stop_the_start(settings):
    from app.services import build_services

    wrong = settings.replace(s3_secret_key="not-the-secret", data_dir=settings.data_dir / "wrong")
    with pytest.raises(StorageSetupError, match="refuses the credentials"):
        build_services(wrong)


def test_public_policy_still_set_where_accepted(settings, weed):
    bucket = f"mosis-public-{uuid.uuid4().hex[:8]}"
    storage = Storage(settings.replace(bucket=bucket))
    storage.ensure_bucket()
    storage.put("assets/x/probe.txt", b"hello", content_type="text/plain")
    try:
        r = requests.get(f"{weed.endpoint}/{bucket}/assets/x/probe.txt", timeout=30)
        assert r.status_code == 200 and r.content == b"hello"
        assert assets_public_policy(bucket)["Statement"][0]["Resource"] == [f"arn:aws:s3:::{bucket}/assets/*"]
    finally:
        storage.delete("assets/x/probe.txt")


@pytest.mark.parametrize("key", [
    "assets/../temp/0123/package.mosis",
    "assets/%2e%2e/backups/db/mosis.dump",
    "assets/0123456789abcdef0123456789abcdef/../../packages/x/y/1/package.mosis",
    "assets/0123456789abcdef0123456789abcdef/icons/1/icon-32.png.bak",
    "assets/0123456789abcdef0123456789abcdef/screenshots/0.png",
    "assets/0123456789abcdef0123456789abcdef/other.txt",
])
def test_private_asset_origin_refuses_what_is_not_an_asset_key(settings, key):
    """The origin route presigns only keys of the shape the app itself makes:
    nothing else in the bucket, and no 500 from a key storage would refuse."""
    from app import create_app
    from app.services import build_services

    private = settings.replace(bucket=f"mosis-private-{uuid.uuid4().hex[:8]}", s3_public_assets=False)
    client = create_app(private, services=build_services(private)).test_client()
    r = client.get(f"/edge/objects/{key}")
    assert r.status_code == 404, r.data
    assert r.json["error"]["code"] == "asset_not_found"
    assert "X-Accel-Redirect" not in r.headers
