"""`mosis`, the developers' command-line tool, run as a real process against
the real stack (gunicorn, scheduler, SeaweedFS). The tool's own logic is the
same code on either database, so these run on SQLite only; the API they use
is tested on both in test_multipart.py and test_flow.py."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import re
import signal
import socket
import threading
import stat
import subprocess
import sys
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from app.platform.config import MiB, S3_MIN_PART_BYTES
from app.platform.db import bind_database
from app.platform.models import Version, database
from app.edge.purge import EdgePurger
from app.platform.storage import Storage, package_key, temp_key
import mosis_cli
from mosis_cli.topics import TOPICS
from tests.helpers import ADMIN, QuietHandler, bearer, build_package, reply, serve, sha256, unique_package_id

on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
PART = S3_MIN_PART_BYTES


@pytest.fixture
def settings(settings, request):
    # Anything over 6 MiB uploads in 5 MiB parts (S3's smallest).
    settings = settings.replace(multipart_threshold_bytes=6 * MiB, multipart_part_bytes=PART)
    if request.node.get_closest_marker("storage_down"):
        from app.native import free_port

        settings = settings.replace(s3_endpoint=f"http://127.0.0.1:{free_port()}")
    return settings


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self):
        return json.loads(self.stdout)


class Cli:
    """Runs `mosis` with its config in a folder of the test's own: in this
    process through main() (fast), or as a real process (`process=True`,
    and `start` for one to kill)."""

    def __init__(self, home: Path):
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MOSIS_")}
        self.env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"))
        self.config = home / "config" / "mosis" / "config.json"

    def argv(self, args) -> list[str]:
        return [sys.executable, "-m", "mosis_cli", *map(str, args)]

    def __call__(self, *args, env: dict | None = None, stdin: str | None = None,
                 process: bool = False) -> Result:
        env = {**self.env, **(env or {})}
        if process:
            p = subprocess.run(self.argv(args), env=env, cwd=self.home, capture_output=True,
                               text=True, input=stdin, timeout=180)
            return Result(p.returncode, p.stdout, p.stderr)
        from mosis_cli import main

        saved_env, saved_cwd, saved_stdin = dict(os.environ), os.getcwd(), sys.stdin
        out, err = io.StringIO(), io.StringIO()
        os.environ.clear()
        os.environ.update(env)
        os.chdir(self.home)
        sys.stdin = io.StringIO(stdin or "")
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = int(main([str(a) for a in args]))
                except SystemExit as e:  # argparse's usage errors
                    code = e.code
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
            os.chdir(saved_cwd)
            sys.stdin = saved_stdin
        return Result(code, out.getvalue(), err.getvalue())

    def start(self, *args) -> subprocess.Popen:
        return subprocess.Popen(self.argv(args), env=self.env, cwd=self.home, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def new_developer(url: str) -> dict:
    r = requests.post(f"{url}/v1/admin/developers", headers=ADMIN, timeout=10,
                      json={"name": "Ada", "email": f"{uuid.uuid4().hex[:10]}@example.com"})
    assert r.status_code == 201, r.text
    return {"id": r.json()["developer"]["id"], "token": r.json()["token"],
            "headers": bearer(r.json()["token"])}


def app_folder(base: Path, package_id: str, code: int, blob: int = 0, **manifest) -> Path:
    folder = base / f"src-{package_id}-{code}"
    (folder / "app").mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({
        "package_id": package_id, "version_code": code, "version_name": f"1.{code}",
        "name": "Notes", "permissions": ["network"], **manifest}))
    (folder / "app" / "main.js").write_text("console.log('hello');\n" * 100)
    if blob:
        (folder / "app" / "blob.bin").write_bytes(os.urandom(blob))  # does not compress
    return folder


def logged_in_with_app(live_stack, tmp_path) -> tuple[Cli, dict, str]:
    """A CLI logged in as a new developer who has one app; its package_id."""
    cli = Cli(tmp_path)
    dev = new_developer(live_stack.url)
    assert cli("login", "--url", live_stack.url, "--token", dev["token"]).code == 0
    package_id = unique_package_id()
    assert cli("apps", "create", package_id, "Notes").code == 0
    return cli, dev, package_id


def wait_until(condition, what: str, proc: subprocess.Popen | None = None, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the CLI ended before {what}: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_console_script_is_installed():
    from app.native import venv_bin

    p = subprocess.run([venv_bin("mosis"), "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "exit codes" in p.stdout and "upload" in p.stdout


@on_sqlite
def test_pack_upload_publish_download_verify(live_stack, tmp_path):
    cli = Cli(tmp_path)
    dev = new_developer(live_stack.url)
    r = cli("login", "--url", live_stack.url + "/", "--token", dev["token"], process=True)
    assert r.code == 0, r.stderr
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600
    assert json.loads(cli.config.read_text()) == {"url": live_stack.url, "token": dev["token"]}

    package_id = unique_package_id()
    r = cli("apps", "create", package_id, "Notes", "--json")
    assert r.code == 0 and r.json["app"]["package_id"] == package_id
    r = cli("--json", "apps", "list")
    assert [a["package_id"] for a in r.json["apps"]] == [package_id]

    folder = app_folder(tmp_path, package_id, 1)
    r = cli("pack", folder, "-o", tmp_path, "--json")
    assert r.code == 0, r.stderr
    built = r.json
    path = Path(built["path"])
    assert path == tmp_path / f"{package_id}-1.mosis" and sha256(path.read_bytes()) == built["sha256"]

    r = cli("upload", path, "--json", process=True)
    assert r.code == 0, r.stderr
    version = r.json["version"]
    assert version["status"] == "draft" and version["sha256"] == built["sha256"]
    assert version["size"] == built["size"] and version["manifest"]["package_id"] == package_id
    r = cli("upload", path)  # the same file again: nothing to do
    assert r.code == 0 and "holds this file already" in r.stderr and "draft" in r.stdout
    assert f"mosis publish {package_id} 1" in r.stdout

    r = cli("versions", package_id)
    assert r.code == 0 and "draft" in r.stdout.splitlines()[1]
    r = cli("publish", package_id, 1, "--json")
    assert r.code == 0 and r.json["version"]["status"] == "published"

    out = tmp_path / "downloads"
    out.mkdir()
    r = cli("download", package_id, "-o", out, "--json")
    assert r.code == 0, r.stderr
    got = out / f"{package_id}-1.mosis"
    assert got.read_bytes() == path.read_bytes()
    assert r.json["signature"] == "verified" and r.json["sha256"] == built["sha256"]
    assert list(out.iterdir()) == [got]  # no partial file left behind
    r = cli("download", package_id, "-o", got)
    assert r.code == 0 and "already here" in r.stdout
    # The store rotates its key, then revokes the first one: downloads follow the keyring.
    first_key = json.loads(cli("download", package_id, "-o", got, "--json").stdout)["key_id"]
    rotated = requests.post(f"{live_stack.url}/v1/admin/signing-keys/rotate", headers=ADMIN, timeout=60)
    assert rotated.status_code == 200, rotated.text
    r = cli("download", package_id, "-o", tmp_path / "rotated.mosis", "--json")
    assert r.code == 0 and r.json["key_id"] == rotated.json()["new_key"] != first_key, r.stderr
    revoked = requests.post(f"{live_stack.url}/v1/admin/signing-keys/{first_key}/revoke", headers=ADMIN,
                            timeout=60)
    assert revoked.status_code == 200, revoked.text
    r = cli("download", package_id, "-o", tmp_path / "revoked.mosis", "--json")
    assert r.code == 0 and r.json["key_id"] == rotated.json()["new_key"], r.stderr
    kept = json.loads(next((tmp_path / "config" / "mosis" / "keyrings").glob("*.json")).read_text())
    assert kept["keyring"]["version"] == 3 and kept["url"] == live_stack.url
    r = cli("catalog", "--json")
    assert r.code == 0 and [p["package_id"] for p in r.json["packages"]] == [package_id], r.stderr

    assert cli("logout").code == 0 and not cli.config.exists()
    r = cli("apps", "list", process=True)
    assert r.code == 3 and "not logged in" in r.stderr


@on_sqlite
def test_download_from_an_old_version_applies_a_signed_patch_or_falls_back(live_stack, tmp_path):
    from tests.delta_packages import app_files
    from tests.helpers import HttpApi

    cli, dev, http = Cli(tmp_path), new_developer(live_stack.url), HttpApi(live_stack.url)
    assert cli("login", "--url", live_stack.url, "--token", dev["token"]).code == 0
    app = http.create_app(dev)
    package_id = app["package_id"]
    old, new = (build_package(package_id, code, app_files(7, code)) for code in (1, 2))
    for code, data in ((1, old), (2, new)):
        http.ship(dev, app, code, data)
    old_path = tmp_path / "old.mosis"
    old_path.write_bytes(old)
    # The scheduler makes the patch from version 1 soon after the publish.
    delta = wait_until(lambda: http.call("GET", f"/v1/packages/{package_id}/download?from_version_code=1",
                                         200).json().get("delta"), "the patch from version 1")

    r = cli("download", package_id, "--from", old_path, "-o", tmp_path / "a.mosis", "--json")
    assert r.code == 0, r.stderr
    assert (tmp_path / "a.mosis").read_bytes() == new and r.json["signature"] == "verified"
    assert r.json["delta"] == {"size": delta["size"], "from_version_code": 1,
                               "saved_bytes": len(new) - delta["size"]}
    assert delta["size"] < len(new) * 0.6
    r = cli("download", package_id, "--from", old_path, "-o", tmp_path / "b.mosis")
    assert r.code == 0 and f"{len(new) - delta['size']} bytes saved" in r.stdout, r.stdout
    assert sorted(p.name for p in tmp_path.glob("*.mosis*")) == ["a.mosis", "b.mosis", "old.mosis"]

    # The store rotates its key: the patch is signed anew, names the new key, and is still used.
    rotated = requests.post(f"{live_stack.url}/v1/admin/signing-keys/rotate", headers=ADMIN, timeout=60)
    assert rotated.status_code == 200, rotated.text
    answer = http.call("GET", f"/v1/packages/{package_id}/download?from_version_code=1", 200).json()
    assert answer["delta"]["key_id"] == rotated.json()["new_key"] != delta["key_id"]
    r = cli("download", package_id, "--from", old_path, "-o", tmp_path / "r.mosis", "--json")
    assert r.code == 0 and r.json["key_id"] == rotated.json()["new_key"], r.stderr
    assert (tmp_path / "r.mosis").read_bytes() == new and r.json["delta"]["saved_bytes"] == len(new) - delta["size"]
    (tmp_path / "r.mosis").unlink()

    # A version the store has no patch from: the full package, and one line saying so.
    other = tmp_path / "other.mosis"
    other.write_bytes(build_package(package_id, 1, app_files(8, 1)))
    r = cli("download", package_id, "--from", other, "-o", tmp_path / "c.mosis")
    assert r.code == 0 and (tmp_path / "c.mosis").read_bytes() == new
    assert r.stderr.count("downloading the full package") == 1 and "no patch from other.mosis" in r.stderr

    # A corrupt patch (storage hands out other bytes than were signed; the
    # edge forgets its copy when told): the full package, saying why.
    storage = Storage(live_stack.settings)
    key = f"deltas/{dev['id']}/{app['id']}/1-2.patch"
    signed = b"".join(storage.stream(key))
    storage.put(key, signed[:200] + bytes([signed[200] ^ 1]) + signed[201:])
    EdgePurger(live_stack.internal_url)([key])
    r = cli("download", package_id, "--from", old_path, "-o", tmp_path / "d.mosis", "--json")
    assert r.code == 0, r.stderr
    assert (tmp_path / "d.mosis").read_bytes() == new and "delta" not in r.json
    assert "patch not used: the patch is not the one the store signed" in r.stderr
    assert sorted(p.name for p in tmp_path.glob("*.mosis*")) == ["a.mosis", "b.mosis", "c.mosis", "d.mosis",
                                                               "old.mosis", "other.mosis"]


@on_sqlite
def test_a_multipart_upload_killed_half_way_resumes(live_stack, tmp_path):
    cli, dev, package_id = logged_in_with_app(live_stack, tmp_path)
    path = Path(cli("pack", app_folder(tmp_path, package_id, 1, blob=int(2.3 * PART)), "--json").json["path"])
    data = path.read_bytes()
    assert len(data) > 2 * PART  # three parts
    app_id = requests.get(f"{live_stack.url}/v1/apps", headers=dev["headers"], timeout=10).json()["apps"][0]["id"]
    upload_url = f"{live_stack.url}/v1/apps/{app_id}/versions/1/upload"

    def parts_held():
        r = requests.get(upload_url, headers=dev["headers"], timeout=10)
        return r.status_code == 200 and r.json()["upload"]["parts"]

    proc = cli.start("upload", path, "--limit-rate", "3M")  # a part takes over 1.5 s
    held = wait_until(parts_held, "a part was uploaded", proc)
    proc.send_signal(signal.SIGKILL)  # a crash: no chance to clean up
    proc.wait(10)
    held = parts_held()
    assert 1 <= len(held) < 3
    assert requests.get(f"{live_stack.url}/v1/apps/{app_id}/versions/1", headers=dev["headers"],
                        timeout=10).json()["version"]["status"] == "uploading"

    r = cli("upload", path, "--json")
    assert r.code == 0, r.stderr
    assert f"resuming: {len(held)} of 3 parts already uploaded" in r.stderr
    version = r.json["version"]
    assert version["status"] == "draft" and version["sha256"] == sha256(data)
    assert version["size"] == len(data)
    assert cli("publish", package_id, 1).code == 0

    # a download broken half-way resumes where it stopped
    out = tmp_path / "big.mosis"
    proc = cli.start("download", package_id, "-o", out, "--limit-rate", "3M")
    partial = wait_until(lambda: [p for p in tmp_path.glob("big.mosis.*.part") if p.stat().st_size],
                         "the download started", proc)[0]
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    have = partial.stat().st_size
    assert 0 < have < len(data) and not out.exists()
    r = cli("download", package_id, "-o", out)
    assert r.code == 0, r.stderr
    resumed_at = int(r.stderr.split("resuming the download at byte ")[1].split()[0])
    assert resumed_at == have
    assert out.read_bytes() == data and not partial.exists()


def corrupt_crc(data: bytes, name: str) -> bytes:
    """Flip one byte inside a stored entry's data: the CRC-32 no longer fits."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = z.getinfo(name)
    at = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 5
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def unsafe_package(package_id: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("manifest.json", json.dumps({"package_id": package_id, "version_code": 5,
                                                "version_name": "5", "name": "X"}))
        z.writestr("../evil.sh", "rm -rf /")
    return buf.getvalue()


@on_sqlite
def test_every_failure_has_its_message_and_exit_code(live_stack, settings, tmp_path):
    cli = Cli(tmp_path)
    dev = new_developer(live_stack.url)

    r = cli("apps", "list")
    assert r.code == 3 and "not logged in" in r.stderr and "mosis login" in r.stderr
    r = cli("login", "--url", live_stack.url, "--token", "mos_wrong")
    assert r.code == 3 and "refused this token" in r.stderr and not cli.config.exists()
    from app.native import free_port
    closed = f"http://127.0.0.1:{free_port()}"
    r = cli("login", "--url", closed, "--token", dev["token"])
    assert r.code == 7 and r.stderr == f"error: cannot reach {closed}/v1/apps: connection refused [network_error]\n"
    r = cli("login", "--url", "ftp://example.com", "--token", "x")
    assert r.code == 2 and "not an http(s) URL" in r.stderr
    # the token can come on stdin, and MOSIS_URL / MOSIS_TOKEN stand in for a login
    r = cli("apps", "list", "--json", env={"MOSIS_URL": live_stack.url, "MOSIS_TOKEN": dev["token"]})
    assert r.code == 0 and r.json == {"apps": []}
    assert cli("login", "--url", live_stack.url, "--token", "-", stdin=dev["token"] + "\n").code == 0

    package_id = unique_package_id()
    r = cli("apps", "create", "Not.Valid", "X", "--json")
    assert r.code == 10 and r.json["error"]["code"] == "invalid_field"
    assert cli("apps", "create", package_id, "Notes").code == 0
    r = cli("apps", "create", package_id, "Notes")
    assert r.code == 5 and "already registered" in r.stderr and "[package_id_taken]" in r.stderr

    # usage
    assert cli("upload", tmp_path / "missing.mosis").code == 2
    assert cli("publish", package_id, "one").code == 2
    assert cli("download").code == 2
    assert cli("upload", "x.mosis", "--publish", "--no-wait").code == 2

    # an app the developer does not have
    other = unique_package_id()
    path = tmp_path / "other.mosis"
    path.write_bytes(build_package(other, 1))
    r = cli("upload", path, "--json")
    assert r.code == 4 and r.json["error"]["code"] == "app_not_found"
    assert f"mosis apps create {other}" in r.stderr
    r = cli("upload", path, "--create-app", "--no-wait")
    assert r.code == 0 and "created the app" in r.stderr
    assert cli("versions", unique_package_id()).code == 4

    # refused locally, before anything is sent
    bad = tmp_path / "unsafe.mosis"
    bad.write_bytes(unsafe_package(package_id))
    r = cli("upload", bad, "--json")
    assert r.code == 6 and r.json["error"]["code"] == "unsafe_path" and "../evil.sh" in r.stderr
    # refused by the store's validator (the local check skipped)
    broken = tmp_path / "broken.mosis"
    broken.write_bytes(corrupt_crc(build_package(package_id, 2, files={"data.bin": b"x" * 5000},
                                                 compression=zipfile.ZIP_STORED), "data.bin"))
    r = cli("upload", broken, "--no-check", "--json")
    assert r.code == 6, r.stderr
    assert r.json["error"]["code"] == "crc_mismatch" and "CRC-32" in r.json["error"]["message"]
    assert r.json["error"]["details"]["version"]["status"] == "failed"
    assert "failed validation" in r.stderr
    versions = cli("versions", package_id, "--json").json["versions"]
    assert [(v["version_code"], v["status"]) for v in versions] == [(2, "failed")]

    # version conflicts
    good = tmp_path / "good.mosis"
    good.write_bytes(build_package(package_id, 3))
    assert cli("upload", good).code == 0
    good.write_bytes(build_package(package_id, 3, files={"other.txt": b"changed"}))
    r = cli("upload", good)
    assert r.code == 5 and "[version_exists]" in r.stderr and "raise version_code" in r.stderr
    assert cli("publish", package_id, 3).code == 0
    r = cli("publish", package_id, 99)
    assert r.code == 4 and "[version_not_found]" in r.stderr
    older = tmp_path / "older.mosis"
    older.write_bytes(build_package(package_id, 2))
    r = cli("upload", older, "--json")
    assert r.code == 5 and r.json["error"]["code"] == "version_code_not_increasing"

    # an unfinished upload of another file holds the code until --restart or abort
    app_id = cli("apps", "list", "--json").json["apps"][0]["id"]
    newer = build_package(package_id, 4)
    r = requests.post(f"{live_stack.url}/v1/apps/{app_id}/versions", headers=dev["headers"], timeout=10,
                      json={"version_code": 4, "version_name": "4", "size": len(newer) + 1})
    assert r.status_code == 201
    (tmp_path / "newer.mosis").write_bytes(newer)
    r = cli("upload", tmp_path / "newer.mosis")
    assert r.code == 5 and "[upload_mismatch]" in r.stderr and "--restart" in r.stderr
    r = cli("upload", tmp_path / "newer.mosis", "--restart", "--json")
    assert r.code == 0 and r.json["version"]["status"] == "draft"
    # storage dropped the parts of an unfinished multipart upload (it expired): start again
    big = Path(cli("pack", app_folder(tmp_path, package_id, 5, blob=int(1.3 * PART)), "--json").json["path"])
    r = requests.post(f"{live_stack.url}/v1/apps/{app_id}/versions", headers=dev["headers"], timeout=10,
                      json={"version_code": 5, "version_name": "1.5", "size": big.stat().st_size,
                            "sha256": sha256(big.read_bytes())})
    assert r.json()["upload"]["kind"] == "multipart"
    bind_database(settings.resolved_database_url)
    with database.connection_context():
        row = Version.get_by_id(r.json()["version"]["id"])
    Storage(settings).abort_multipart(temp_key(row.upload_id), row.multipart_upload_id)
    r = cli("upload", big, "--json")
    assert r.code == 0, r.stderr
    assert "no longer holds the unfinished upload" in r.stderr and r.json["version"]["status"] == "draft"

    requests.post(f"{live_stack.url}/v1/apps/{app_id}/versions", headers=dev["headers"], timeout=10,
                  json={"version_code": 6, "version_name": "6", "size": 100})
    r = cli("abort", package_id, 6, "--json")
    assert r.code == 0 and r.json["version"]["status"] == "abandoned"
    assert cli("abort", package_id, 7).code == 4

    # downloads
    r = cli("download", unique_package_id())
    assert r.code == 4 and "[package_not_found]" in r.stderr
    foreign_key = "A" * 43 + "="
    r = cli("download", package_id, "--public-key", foreign_key, "-o", tmp_path / "d1.mosis")
    assert r.code == 9 and "[unknown_signing_key]" in r.stderr and not (tmp_path / "d1.mosis").exists()
    # storage hands out other bytes than were signed: as many, or not as many
    # (the edge caches a package for good under its key: it forgets it when told)
    storage, key = Storage(settings), package_key(dev["id"], app_id, 3)
    forget = EdgePurger(live_stack.internal_url)
    signed = b"".join(storage.stream(key))
    storage.put(key, signed[:-1] + bytes([signed[-1] ^ 1]))
    forget([key])
    r = cli("download", package_id, "-o", tmp_path / "d2.mosis", "--json")
    assert r.code == 9 and r.json["error"]["code"] == "sha256_mismatch", r.stderr
    storage.put(key, signed + b"more")
    forget([key])
    r = cli("download", package_id, "-o", tmp_path / "d2.mosis", "--json")
    assert r.code == 9 and r.json["error"]["code"] == "size_mismatch", r.stderr
    assert list(tmp_path.glob("d2.mosis*")) == []  # nothing kept

    # the service is down
    live_stack.api.stop()
    r = cli("apps", "list")
    assert r.code == 7 and r.stderr.count("\n") == 1 and "cannot reach" in r.stderr, r.stderr


@on_sqlite
def test_waiting_for_validation_times_out(live_stack, tmp_path):
    cli, dev, package_id = logged_in_with_app(live_stack, tmp_path)
    live_stack.scheduler.stop()  # nobody validates
    path = tmp_path / "p.mosis"
    path.write_bytes(build_package(package_id, 1))
    r = cli("upload", path, "--timeout", "1", "--json")
    assert r.code == 11 and r.json["error"]["code"] == "still_validating"
    assert r.json["error"]["details"]["version"]["status"] == "validating"
    r = cli("upload", path, "--no-wait", "--json")  # the same file: nothing more to send
    assert r.code == 0 and r.json["version"]["status"] == "validating"


@pytest.mark.storage_down
@on_sqlite
def test_a_service_error_is_reported_as_such(live_stack, tmp_path):
    cli, dev, package_id = logged_in_with_app(live_stack, tmp_path)
    path = Path(cli("pack", app_folder(tmp_path, package_id, 1, blob=7 * MiB), "--json").json["path"])
    r = cli("upload", path, "--json")  # a multipart upload must be started in storage
    assert r.code == 8, r.stderr
    assert r.json["error"]["code"] == "storage_unavailable" and "storage" in r.stderr


def _has_assets_api() -> bool:
    from flask import Flask

    from app import api

    probe = Flask("probe")
    api.register(probe)
    return any(r.rule.startswith("/v1/apps/") and r.rule.endswith("/icon")
               for r in probe.url_map.iter_rules())


needs_assets = pytest.mark.skipif(not _has_assets_api(), reason="needs the assets API")


def png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(buf, "PNG")
    return buf.getvalue()


@needs_assets
@on_sqlite
def test_icon_and_screenshots(live_stack, tmp_path):
    cli, dev, package_id = logged_in_with_app(live_stack, tmp_path)
    icon = tmp_path / "icon.png"
    icon.write_bytes(png(512, 512))
    r = cli("icon", "set", package_id, icon, "--json")
    assert r.code == 0, r.stderr
    assert set(r.json["icons"]) == {"32", "64", "128"}
    assert requests.get(r.json["icons"]["64"], timeout=10).status_code == 200

    shots = [tmp_path / f"s{i}.png" for i in range(2)]
    for s in shots:
        s.write_bytes(png(1080, 1920))
    r = cli("screenshots", "add", package_id, *shots, "--json")
    assert r.code == 0, r.stderr
    added = r.json["screenshots"]
    assert [(s["width"], s["height"]) for s in added] == [(1080, 1920)] * 2
    r = cli("screenshots", "list", package_id, "--json")
    assert [s["position"] for s in r.json["screenshots"]] == [s["position"] for s in added]
    r = cli("screenshots", "rm", package_id, added[0]["position"])
    assert r.code == 0
    r = cli("screenshots", "list", package_id, "--json")
    # the second screenshot is left, and moved up to the first place
    assert [(s["position"], s["url"]) for s in r.json["screenshots"]] == [(1, added[1]["url"])]

    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    r = cli("icon", "set", package_id, not_an_image)
    assert r.code == 10 and "error:" in r.stderr
    assert cli("screenshots", "rm", package_id, 99).code == 4


# -- without a service: pack, check, configuration ------------------------------------------

def test_pack_builds_a_reproducible_package_the_validator_accepts(tmp_path):
    cli = Cli(tmp_path)
    package_id = unique_package_id()
    folder = app_folder(tmp_path, package_id, 3)
    (folder / "app" / "run.sh").write_text("#!/bin/sh\n")
    (folder / "app" / "run.sh").chmod(0o755)
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / ".DS_Store").write_bytes(b"\0")
    (folder / "assets" / "ünïcode").mkdir(parents=True)
    (folder / "assets" / "ünïcode" / "é.txt").write_text("x")

    r = cli("pack", folder, "--json")  # into the working directory
    assert r.code == 0, r.stderr
    first = r.json
    path = Path(first["path"])
    assert path == tmp_path / f"{package_id}-3.mosis" and first["version_code"] == 3
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        modes = {i.filename: i.external_attr >> 16 for i in z.infolist()}
    assert names[0] == "manifest.json"
    assert sorted(names) == sorted(["manifest.json", "app/main.js", "app/run.sh", "assets/ünïcode/é.txt"])
    assert modes["app/run.sh"] & 0o777 == 0o755 and modes["app/main.js"] & 0o777 == 0o644
    # same folder, same bytes (fixed timestamps and order), even after a touch
    os.utime(folder / "app" / "main.js", (0, 0))
    again = cli("pack", folder, "-o", tmp_path / "again.mosis", "--json").json
    assert again["sha256"] == first["sha256"] and again["path"] == str(tmp_path / "again.mosis")
    r = cli("check", path, "--json")
    assert r.code == 0 and r.json["sha256"] == first["sha256"] and r.json["entries"] == 4
    # packing where the output lands inside the folder does not pack the output
    inner = cli("pack", folder, "-o", folder / "out.mosis", "--json")
    assert inner.code == 0 and cli("pack", folder, "-o", folder / "out.mosis", "--json").json["entries"] == 4


@pytest.mark.parametrize("problem, code", [
    ("no manifest", "manifest_missing"),
    ("bad manifest", "manifest_invalid"),
    ("manifest not json", "manifest_invalid"),
    ("symlink", "symlink"),
    ("backslash", "unsafe_path"),
])
def test_pack_refuses_what_validation_refuses(tmp_path, problem, code):
    cli = Cli(tmp_path)
    folder = app_folder(tmp_path, unique_package_id(), 1)
    if problem == "no manifest":
        (folder / "manifest.json").unlink()
    elif problem == "bad manifest":
        (folder / "manifest.json").write_text(json.dumps({"package_id": "Com.Bad", "version_code": 1,
                                                          "version_name": "1", "name": "X"}))
    elif problem == "manifest not json":
        (folder / "manifest.json").write_text("{nope")
    elif problem == "symlink":
        (folder / "app" / "passwords").symlink_to("/etc/passwd")
    elif problem == "backslash":
        (folder / "app" / "..\\..\\evil").write_text("x")
    r = cli("pack", folder, "-o", tmp_path / "out.mosis", "--json")
    assert r.code == 6, r.stderr
    assert r.json["error"]["code"] == code and r.json["error"]["exit_code"] == 6
    assert f"[{code}]" in r.stderr
    assert re.search(r"^hint: .*mosis help (validation|packaging)", r.stderr, re.M), r.stderr
    assert list(tmp_path.glob("*.mosis")) == [] and list(tmp_path.glob(".*.tmp")) == []


def test_check_names_the_reason_a_package_is_refused(tmp_path):
    cli = Cli(tmp_path)
    cases = {
        "not-a-zip.mosis": (b"just text", "invalid_zip"),
        "unsafe.mosis": (unsafe_package("com.example.x"), "unsafe_path"),
        "crc.mosis": (corrupt_crc(build_package("com.example.x", 1, files={"d": b"y" * 999},
                                                compression=zipfile.ZIP_STORED), "d"), "crc_mismatch"),
    }
    for name, (data, code) in cases.items():
        (tmp_path / name).write_bytes(data)
        r = cli("check", tmp_path / name, "--json")
        assert r.code == 6 and r.json["error"]["code"] == code, (name, r.stderr)
        assert r.json["error"]["hint"].endswith("mosis help validation")
    assert cli("check", tmp_path / "missing.mosis").code == 2
    assert cli("pack", tmp_path / "missing-dir").code == 2
    assert cli("upload", "x.mosis", "--limit-rate", "fast").code == 2


def test_login_keeps_the_token_private_and_environment_wins(tmp_path):
    cli = Cli(tmp_path)
    r = cli("login", "--url", "http://127.0.0.1:9/", "--token", "mos_secret", "--no-verify", "--json")
    assert r.code == 0 and r.json["url"] == "http://127.0.0.1:9"
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.config.parent.stat().st_mode) == 0o700
    assert "mos_secret" not in r.stdout + r.stderr
    # a config others can read is used, with a warning
    cli.config.chmod(0o644)
    from app.native import free_port
    r = cli("apps", "list", env={"MOSIS_URL": f"http://127.0.0.1:{free_port()}"})
    assert r.code == 7 and "readable by others" in r.stderr
    # without XDG_CONFIG_HOME the config is under ~/.config
    r = cli("login", "--url", "http://127.0.0.1:9", "--token", "t", "--no-verify",
            env={"XDG_CONFIG_HOME": ""})
    assert r.code == 0 and (tmp_path / ".config" / "mosis" / "config.json").exists()
    assert cli("logout").code == 0 and not cli.config.exists()
    r = cli("logout", "--json")
    assert r.code == 0 and r.json["removed"] is False


def test_help_topics_ship_with_the_client(tmp_path):
    cli = Cli(tmp_path)
    r = cli("help", process=True)
    assert r.code == 0 and all(re.search(rf"^  {t} +\S", r.stdout, re.M) for t in TOPICS), r.stdout
    for topic in TOPICS:
        r = cli("help", topic, "--json")
        assert r.code == 0 and r.json["topic"] == topic and r.json["text"].count("\n") > 10
    assert cli("help", "nope").code == 2
    assert "mosis help TOPIC" in cli("--help", process=True).stdout
    # What the tool says points at what it ships, never at this repository's files.
    shipped = "\n".join(p.read_text() for p in Path(mosis_cli.__file__).parent.rglob("*")
                        if p.suffix in (".py", ".txt"))
    assert "docs/" not in shipped and not re.search(r"\.md\b", shipped)
    named = set(re.findall(r"mosis help ([a-z][a-z-]*)", shipped))
    assert {"validation", "packaging", "signing", "uploads"} <= named <= set(TOPICS)


def test_an_unreachable_service_is_one_line_and_exit_code_7(tmp_path):
    from app.native import free_port

    cli = Cli(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    r = cli("apps", "list", env={"MOSIS_URL": url, "MOSIS_TOKEN": "mos_x"}, process=True)
    assert (r.code, r.stderr) == (7, f"error: cannot reach {url}/v1/apps: connection refused [network_error]\n")
    r = cli("download", "com.example.notes", "--json", env={"MOSIS_URL": url}, process=True)
    assert r.code == 7 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.json["error"] == {"code": "network_error", "exit_code": 7,
                               "message": f"cannot reach {url}/v1/packages/com.example.notes/download: "
                                          "connection refused"}


class DroppingStorage:
    """A storage endpoint on 127.0.0.1 that takes the start of each upload
    and then drops the connection (a reset), as a failing network does."""

    def __init__(self, take: int):
        self.take = take
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            got = 0
            with conn:
                while got < self.take and (data := conn.recv(65536)):
                    got += len(data)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # RST

    def close(self):
        self.sock.close()


def on_a_terminal(argv: list[str], env: dict, cwd: Path) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal, as a developer sees it: the
    exit code and everything written there (the terminal turns \\n into \\r\\n)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the process ended
            break
        if not data:
            break
        seen += data
    os.close(master)
    return proc.wait(timeout=60), seen.decode().replace("\r\n", "\n")


@pytest.mark.timeout(180)
@on_sqlite
def test_an_upload_that_fails_mid_way_reports_on_a_fresh_line(settings, tmp_path):
    from app.native import free_ports
    from tests.stack import edge_settings, start_live_stack

    storage = DroppingStorage(take=512 * 1024)
    stack = start_live_stack(edge_settings(settings, *free_ports(2), s3_public_endpoint=storage.url),
                             scheduler=False)
    try:
        cli, dev, package_id = logged_in_with_app(stack, tmp_path)
        path = tmp_path / "big.mosis"
        path.write_bytes(build_package(package_id, 1, files={"blob.bin": os.urandom(4 * MiB)},
                                       compression=zipfile.ZIP_STORED))
        code, err = on_a_terminal(cli.argv(["upload", path, "--no-check"]), cli.env, tmp_path)
    finally:
        stack.stop()
        storage.close()
    assert code == 7, err
    assert storage.connections == 4  # the first attempt and three retries
    bar, _, error = err.rpartition("error: ")
    assert re.search(r"\rupload \[[#.]{30}\] +\d+% [^\n]*\x1b\[K\n$", bar), repr(err)  # the bar, its line ended
    assert re.fullmatch(rf"upload the package: lost the connection to {storage.url}/mosis-test/temp/"
                        r"[^?\s]+/package\.mosis: (connection reset by peer|broken pipe|the connection was closed "
                        r"without an answer) \[network_error\]\n", error), repr(err)


@on_sqlite
def test_a_scoped_token_says_what_it_lacks(live_stack, tmp_path):
    """A build pipeline's token uploads but cannot publish; the client says
    which scope is missing and what to do, with the auth exit code."""
    cli, dev, package_id = logged_in_with_app(live_stack, tmp_path)
    r = requests.post(f"{live_stack.url}/v1/admin/developers/{dev['id']}/tokens", headers=ADMIN, timeout=10,
                      json={"scopes": ["read", "upload"]})
    assert r.status_code == 201, r.text
    assert cli("login", "--url", live_stack.url, "--token", r.json()["token"]).code == 0
    folder = app_folder(tmp_path, package_id, 1)
    built = cli("pack", folder, "-o", tmp_path, "--json").json
    assert cli("upload", built["path"]).code == 0
    r = cli("publish", package_id, 1)
    assert r.code == 3, r.stderr
    assert "lacks the 'publish' scope" in r.stderr and "with the 'publish' scope" in r.stderr
    r = cli("publish", package_id, 1, "--json")
    assert r.json["error"]["code"] == "insufficient_scope"
    assert r.json["error"]["details"] == {"scope": "publish"}


class StubStore:
    """A store on 127.0.0.1 that answers what the test puts in `routes`
    (path -> JSON, or bytes): a keyring, download answers and an index
    the real store would never serve."""

    def __init__(self):
        self.routes: dict[str, object] = {}
        stub = self

        class Handler(QuietHandler):
            def do_GET(self):
                body = stub.routes.get(self.path)
                if body is None:
                    reply(self, 404, {"error": {"code": "not_found", "message": "no such route"}})
                else:
                    reply(self, 200, body)

        self.server = serve(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def keyrings(self, *versions) -> None:
        for ring in versions:
            self.routes[f"/v1/signing-keys/{ring.version}"] = ring.to_json()
        self.routes["/v1/signing-keys"] = versions[-1].to_json()

    def package(self, package_id: str, data: bytes, signer) -> None:
        from mosis_format.signing import Signature, package_message

        message = package_message(package_id, 1, sha256(data), len(data))
        self.routes[f"/v1/packages/{package_id}/download"] = {
            "download_url": f"{self.url}/blob", "version": "1.0", "version_code": 1, "size": len(data),
            "sha256": sha256(data), "signature": Signature.made_by(signer, message).signature,
            "key_id": signer.key_id, "expires_at": "2099-01-01T00:00:00Z"}
        self.routes["/blob"] = data

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub_store():
    stub = StubStore()
    yield stub
    stub.close()


def test_the_cli_checks_a_patch_with_the_key_it_names_and_refuses_a_revoked_one(stub_store, tmp_path):
    import datetime as dt

    from mosis_format import keyring as kr
    from mosis_format.delta import signed_message
    from mosis_format.delta.generator import generate
    from mosis_format.signing import Ed25519Signer, Signature
    from tests.delta_packages import app_files

    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    a, b = Ed25519Signer.generate(), Ed25519Signer.generate()
    v1 = kr.sign(kr.first(a.public_key, now=now), [a])
    v2 = kr.sign(kr.rotate(v1, b.public_key, now=now), [a, b], v1)
    v3 = kr.sign(kr.revoke(v2, a.key_id, now=now), [b], v2)
    package_id = "com.example.notes"
    old, new = (build_package(package_id, code, app_files(7, code)) for code in (1, 2))
    (tmp_path / "old.mosis").write_bytes(old)
    (tmp_path / "new.mosis").write_bytes(new)
    info = generate(tmp_path / "old.mosis", tmp_path / "new.mosis", tmp_path / "patch")
    stub_store.routes["/patch"] = (tmp_path / "patch").read_bytes()
    message = signed_message(package_id, 1, sha256(old), 1, sha256(new), info.sha256, info.size)
    cli, env = Cli(tmp_path), {"MOSIS_URL": stub_store.url}

    def download(name: str, signer, key_id: str) -> Result:
        stub_store.package(package_id, new, b)
        answer = dict(stub_store.routes[f"/v1/packages/{package_id}/download"])
        answer["delta"] = {"url": f"{stub_store.url}/patch", "size": info.size, "sha256": info.sha256,
                           "algorithm": "mosis-zipdelta-v1", "from_version_code": 1, "from_sha256": sha256(old),
                           "signature": Signature.made_by(signer, message).signature, "key_id": key_id,
                           "expires_at": "2099-01-01T00:00:00Z"}
        stub_store.routes[f"/v1/packages/{package_id}/download?from_sha256={sha256(old)}"] = answer
        return cli("download", package_id, "--from", tmp_path / "old.mosis", "-o", tmp_path / name, "--json",
                   env=env)

    # Signed by the retired key it names: used.
    stub_store.keyrings(v1, v2)
    r = download("1.mosis", a, a.key_id)
    assert r.code == 0 and r.json["delta"]["size"] == info.size, r.stderr
    assert (tmp_path / "1.mosis").read_bytes() == new
    # Made by one key, naming another: not used, the full package instead.
    r = download("2.mosis", a, b.key_id)
    assert r.code == 0 and "delta" not in r.json and (tmp_path / "2.mosis").read_bytes() == new
    assert r.stderr.splitlines()[0] == (f"patch not used: the patch's signature does not verify with key "
                                        f"{b.key_id} (bad_signature); downloading the full package")
    assert r.stderr.count("patch not used") == 1
    # The key it names is revoked: one line says so, and the full package is downloaded.
    stub_store.keyrings(v1, v2, v3)
    r = download("3.mosis", a, a.key_id)
    assert r.code == 0 and "delta" not in r.json and (tmp_path / "3.mosis").read_bytes() == new
    assert r.stderr.splitlines()[0] == (f"patch not used: the patch is signed by key {a.key_id}, which the "
                                        f"store revoked; downloading the full package")
    assert r.stderr.count("patch not used") == 1
    # The active key, named: used.
    r = download("4.mosis", b, b.key_id)
    assert r.code == 0 and r.json["delta"]["size"] == info.size and r.json["key_id"] == b.key_id, r.stderr


def test_the_cli_follows_the_keyring_and_refuses_forgery_rollback_revoked_keys_and_old_indexes(stub_store, tmp_path):
    import datetime as dt

    from mosis_format import index as mindex
    from mosis_format import keyring as kr
    from mosis_format.signing import Ed25519Signer

    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    a, b, attacker = (Ed25519Signer.generate() for _ in range(3))
    v1 = kr.sign(kr.first(a.public_key, now=now), [a])
    v2 = kr.sign(kr.rotate(v1, b.public_key, now=now), [a, b], v1)
    v3 = kr.sign(kr.revoke(v2, a.key_id, now=now), [b], v2)
    cli, env = Cli(tmp_path), {"MOSIS_URL": stub_store.url}
    kept = lambda: json.loads(next((tmp_path / "config" / "mosis" / "keyrings").glob("*.json")).read_text())
    data = b"package bytes" * 100

    def download(name: str) -> Result:
        return cli("download", "com.example.notes", "-o", tmp_path / name, "--json", env=env)

    # Version 1, trusted on first use; a package signed by its key.
    stub_store.keyrings(v1)
    stub_store.package("com.example.notes", data, a)
    r = download("1.mosis")
    assert r.code == 0 and r.json["key_id"] == a.key_id, r.stderr
    assert (tmp_path / "1.mosis").read_bytes() == data and kept()["keyring"] == v1.to_json()
    # A rotation: followed version by version; the new key's signature verifies.
    stub_store.keyrings(v1, v2)
    stub_store.package("com.example.notes", data, b)
    r = download("2.mosis")
    assert r.code == 0 and r.json["key_id"] == b.key_id and kept()["keyring"]["version"] == 2, r.stderr
    # The old key is revoked: its signature is refused, in one line and a hint.
    stub_store.keyrings(v1, v2, v3)
    stub_store.package("com.example.notes", data, a)
    r = cli("download", "com.example.notes", "-o", tmp_path / "3.mosis", env=env)
    assert r.code == 9 and not (tmp_path / "3.mosis").exists()
    assert r.stderr.splitlines() == [
        f"error: com.example.notes 1.0 (version_code 1) is signed by key {a.key_id}, which the store "
        f"revoked: do not install it [revoked_key]", "hint: what is verified and why: mosis help signing"]
    assert kept()["keyring"]["version"] == 3
    # A forged version 4 (the attacker's key, signed only by itself) and a tampered one.
    forged = kr.sign(kr.rotate(v3, attacker.public_key, now=now), [attacker], v3)
    tampered = json.loads(json.dumps(v3.to_json()))
    tampered["version"] = 4
    for doc, reason in ((forged.to_json(), "missing_signature"), (tampered, "bad_signature")):
        stub_store.routes["/v1/signing-keys"] = stub_store.routes["/v1/signing-keys/4"] = doc
        stub_store.package("com.example.notes", data, attacker if doc is not tampered else b)
        r = download("4.mosis")
        assert r.code == 9 and r.json["error"]["code"] == "untrusted_keyring", r.stderr
        assert r.json["error"]["details"] == {"reason": reason}
        assert kept()["keyring"] == v3.to_json() and not (tmp_path / "4.mosis").exists()
    # A rollback to version 2 is refused; the kept keyring stays.
    stub_store.keyrings(v1, v2)
    stub_store.package("com.example.notes", data, b)
    r = download("5.mosis")
    assert r.code == 9 and r.json["error"]["details"] == {"reason": "rollback"} and kept()["keyring"]["version"] == 3
    stub_store.keyrings(v1, v2, v3)
    # A first key pinned that the keyring does not start from.
    other = Cli(tmp_path / "other")
    (tmp_path / "other").mkdir()
    r = other("download", "com.example.notes", "--public-key", attacker.public_key, "--json", env=env)
    assert r.code == 9 and r.json["error"]["code"] == "unknown_signing_key", r.stderr
    r = other("download", "com.example.notes", "--public-key", a.public_key, "--json", env=env)
    assert r.code == 0 and r.json["key_id"] == b.key_id, r.stderr

    # The index: verified, then an older one and an expired one refused.
    entry = mindex.Entry("com.example.notes", 1, len(data), sha256(data),
                         stub_store.routes["/v1/packages/com.example.notes/download"]["signature"], b.key_id)
    older = mindex.make([entry], v3, b, now=now - dt.timedelta(hours=1))
    stub_store.routes["/v1/index.json"] = mindex.make([entry], v3, b, now=now).to_json()
    r = cli("catalog", "--json", env=env)
    assert r.code == 0 and r.json["packages"] == [entry.to_json()], r.stderr
    assert kept()["index_issued_at"] == stub_store.routes["/v1/index.json"]["issued_at"]
    assert "com.example.notes" in cli("catalog", env=env).stdout
    stub_store.routes["/v1/index.json"] = older.to_json()
    r = cli("catalog", "--json", env=env)
    assert r.code == 9 and r.json["error"]["code"] == "untrusted_index"
    assert r.json["error"]["details"] == {"reason": "rollback"}
    expired = mindex.make([entry], v3, b, now=now - dt.timedelta(days=8))
    stub_store.routes["/v1/index.json"] = expired.to_json()
    r = other("catalog", "--json", env=env)
    assert r.code == 9 and r.json["error"]["details"] == {"reason": "expired"}, r.stderr
