"""What each `mosis` command does. Each takes the parsed arguments and the
output, prints its result, and raises CliError to fail."""

from __future__ import annotations

import getpass
import hashlib
import json
import mimetypes
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import requests

from mosis_cli import config
from mosis_cli.errors import CliError, Exit
from mosis_cli.http import (
    CHUNK,
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    USER_AGENT,
    Api,
    FileSlice,
    network_error,
    put_bytes,
    send_with_retries,
)
from mosis_cli.pack import VALIDATION_HINT, Checked, check_package, pack, read_package_unchecked
from mosis_cli.progress import Progress, RateLimit, end_line, human_bytes
from mosis_cli.topics import TOPICS, summary, topic_text
from mosis_cli.trust import SIGNING_HINT, Trust
from mosis_format import keyring as kr
from mosis_format.delta import DeltaError, apply, signed_message

RESTART_HINT = "run again with --restart to abort it and upload this file (mosis help uploads)"
POLL_SECONDS = 0.5
DOWNLOAD_ROUNDS_WITHOUT_PROGRESS = 3


class Output:
    """Results on stdout (JSON with --json), notes and progress on stderr."""

    def __init__(self, json_mode: bool = False, quiet: bool = False):
        self.json_mode, self.quiet = json_mode, quiet

    def result(self, data: dict, human: list[str] | str) -> None:
        if self.json_mode:
            print(json.dumps(data, indent=2, sort_keys=False))
        else:
            print(human if isinstance(human, str) else "\n".join(human))

    def note(self, message: str) -> None:
        if not self.quiet:
            end_line()
            print(message, file=sys.stderr, flush=True)

    def progress(self, label: str, total: int, done: int = 0) -> Progress:
        return Progress(label, total, done, enabled=not self.quiet)

    def error(self, e: CliError) -> None:
        end_line()  # never on the progress bar's line
        print(f"error: {e.message} [{e.code}]", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        if self.json_mode:
            print(json.dumps(e.to_dict(), indent=2))


@dataclass
class Context:
    args: object
    out: Output

    def api(self, auth: bool = True) -> Api:
        creds = config.load()
        return Api(creds.require_url(), creds.require_token() if auth else creds.token)


def table(rows: list[list[str]], header: list[str]) -> list[str]:
    if not rows:
        return []
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]


# -- account ------------------------------------------------------------------------

def login(ctx: Context) -> None:
    args = ctx.args
    url = config.normalise_url(args.url)
    token = args.token
    if token in (None, "-"):
        # Reading it from stdin keeps it out of the shell history and `ps`.
        token = getpass.getpass("token: ") if sys.stdin.isatty() else sys.stdin.readline()
    token = (token or "").strip()
    if not token:
        raise CliError(Exit.USAGE, "no token given", code="missing_token",
                       hint="pass --token TOKEN, or pipe it: echo $TOKEN | mosis login --url URL --token -")
    apps = None
    if not args.no_verify:
        try:
            apps = len(Api(url, token).call("GET", "/v1/apps")["apps"])
        except CliError as e:
            if e.exit_code == Exit.AUTH:
                e.message = f"{url} refused this token: {e.message}"
                e.hint = "ask the store admins for a developer token"
            raise
    path = config.save(url, token)
    ctx.out.result({"url": url, "config": str(path), "apps": apps},
                   f"logged in to {url}" + (f" ({apps} apps)" if apps is not None else "")
                   + f"; the token is saved in {path}, readable only by you")


def logout(ctx: Context) -> None:
    removed = config.forget()
    path = config.config_path()
    ctx.out.result({"config": str(path), "removed": removed},
                   f"removed {path}" if removed else f"not logged in ({path} does not exist)")


def help_cmd(ctx: Context) -> None:
    name = ctx.args.topic
    if name:
        text = topic_text(name)
        ctx.out.result({"topic": name, "text": text}, text.rstrip("\n"))
        return
    width = max(map(len, TOPICS))
    ctx.out.result({"topics": {t: summary(t) for t in TOPICS}},
                   ["help topics (mosis help TOPIC):"] + [f"  {t:<{width}}  {summary(t)}" for t in TOPICS]
                   + ["commands: mosis --help, mosis COMMAND --help"])


# -- apps ----------------------------------------------------------------------------

def find_app(api: Api, package_id: str) -> dict:
    for app in api.call("GET", "/v1/apps")["apps"]:
        if app["package_id"] == package_id:
            return app
    raise CliError(Exit.NOT_FOUND, f"you have no app {package_id!r}", code="app_not_found",
                   hint=f"create it: mosis apps create {package_id} \"App name\"")


def apps_list(ctx: Context) -> None:
    apps = ctx.api().call("GET", "/v1/apps")["apps"]
    rows = [[a["package_id"], a["name"], a["id"], a["created_at"] or ""] for a in apps]
    ctx.out.result({"apps": apps}, table(rows, ["PACKAGE_ID", "NAME", "ID", "CREATED"])
                   or "no apps yet; create one with: mosis apps create PACKAGE_ID NAME")


def apps_create(ctx: Context) -> None:
    app = ctx.api().call("POST", "/v1/apps", json={"package_id": ctx.args.package_id,
                                                     "name": ctx.args.name})["app"]
    ctx.out.result({"app": app}, f"created {app['package_id']} ({app['name']}), id {app['id']}")


# -- versions ------------------------------------------------------------------------------

def _version_path(app: dict, code: int) -> str:
    return f"/v1/apps/{app['id']}/versions/{int(code)}"


def _get_version(api: Api, app: dict, code: int) -> dict | None:
    try:
        return api.call("GET", _version_path(app, code))["version"]
    except CliError as e:
        if e.exit_code == Exit.NOT_FOUND:
            return None
        raise


def version_lines(package_id: str, v: dict) -> list[str]:
    lines = [f"{package_id} {v['version_name']} (version_code {v['version_code']}): {v['status']}"]
    manifest = v.get("manifest") or {}
    fields = [
        ("size", f"{human_bytes(v['size'])} ({v['size']} bytes)" if v.get("size") is not None else None),
        ("sha256", v.get("sha256")),
        ("name", manifest.get("name")),
        ("permissions", ", ".join(manifest.get("permissions") or []) or "none" if manifest else None),
        ("error", f"{v['error']['code']}: {v['error']['message']}" if v.get("error") else None),
        ("reason", v.get("reason")),
    ]
    lines += [f"  {label:<12} {value}" for label, value in fields if value]
    return lines


def versions(ctx: Context) -> None:
    api = ctx.api()
    app = find_app(api, ctx.args.package_id)
    items = api.call("GET", f"/v1/apps/{app['id']}/versions")["versions"]
    rows = [[str(v["version_code"]), v["version_name"], v["status"],
             human_bytes(v["size"]) if v.get("size") is not None else "",
             (v["created_at"] or ""), (v["error"] or {}).get("code", "")] for v in items]
    ctx.out.result({"app": app, "versions": items},
                   table(rows, ["CODE", "NAME", "STATUS", "SIZE", "CREATED", "ERROR"])
                   or f"{app['package_id']} has no versions yet")


def publish(ctx: Context) -> None:
    api = ctx.api()
    app = find_app(api, ctx.args.package_id)
    v = api.call("POST", f"{_version_path(app, ctx.args.version_code)}/publish", retry=True)["version"]
    ctx.out.result({"version": v}, f"published {app['package_id']} {v['version_name']} "
                   f"(version_code {v['version_code']})")


def abort(ctx: Context) -> None:
    api = ctx.api()
    app = find_app(api, ctx.args.package_id)
    v = api.call("DELETE", f"{_version_path(app, ctx.args.version_code)}/upload")["version"]
    ctx.out.result({"version": v}, f"aborted the upload of version_code {v['version_code']}; "
                   "the code is free to upload again")


# -- pack and check ----------------------------------------------------------------------------

def _checked_lines(c: Checked, verb: str) -> list[str]:
    m = c.manifest
    return [f"{verb} {c.path}: {m['package_id']} {m['version_name']} (version_code {m['version_code']})",
            f"  {c.entries} entries, {human_bytes(c.unpacked_size)} unpacked, "
            f"{human_bytes(c.size)} packed ({c.size} bytes)",
            f"  sha256 {c.sha256}"]


def pack_cmd(ctx: Context) -> None:
    out = Path(ctx.args.output) if ctx.args.output else None
    checked = pack(Path(ctx.args.directory), out)
    ctx.out.result(checked.to_dict(), _checked_lines(checked, "built"))


def _existing_file(name: str) -> Path:
    path = Path(name)
    if not path.is_file():
        raise CliError(Exit.USAGE, f"{name}: no such file", code="no_such_file")
    return path


def check_cmd(ctx: Context) -> None:
    checked = check_package(_existing_file(ctx.args.package))
    ctx.out.result(checked.to_dict(), _checked_lines(checked, "valid"))


# -- upload -----------------------------------------------------------------------------------

def _md5_of(f, offset: int, length: int) -> str:
    h = hashlib.md5(usedforsecurity=False)
    f.seek(offset)
    left = length
    while left:
        chunk = f.read(min(CHUNK * 4, left))
        if not chunk:
            break
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest()


def _part_is_ours(f, held: dict, offset: int, length: int) -> bool:
    """A part storage holds is kept if it is this file's bytes: same size and,
    where the ETag is the part's MD5 (plain S3), the same MD5."""
    if held["size"] != length:
        return False
    etag = (held.get("etag") or "").strip('"').lower()
    return not re.fullmatch(r"[0-9a-f]{32}", etag) or etag == _md5_of(f, offset, length)


class Uploader:
    """Sends a checked package for a version that is `uploading`."""

    def __init__(self, ctx: Context, api: Api, base: str, checked: Checked, rate: int | None):
        self.ctx, self.api, self.base, self.checked = ctx, api, base, checked
        self.limit = RateLimit(rate)

    def send(self, upload: dict) -> None:
        if upload.get("kind") == "multipart":
            self._multipart()
        else:
            self._single(upload)

    def _single(self, upload: dict) -> None:
        current = {"upload": upload}
        size = self.checked.size
        with open(self.checked.path, "rb") as f:
            progress = self.ctx.out.progress("upload", size)

            def once():
                u = current["upload"]
                return put_bytes(u["url"], u["method"], u["headers"],
                                 FileSlice(f, 0, size, progress, self.limit), "upload the package")

            def refresh():
                current["upload"] = self.api.call("GET", f"{self.base}/upload")["upload"]

            send_with_retries("upload the package", once, refresh)
            progress.finish()

    def _multipart(self) -> None:
        state = self.api.call("GET", f"{self.base}/upload")["upload"]
        size, part_size, count = state["size"], state["part_size"], state["part_count"]
        if size != self.checked.size:
            raise CliError(Exit.CONFLICT, f"the upload in progress is for {size} bytes but this "
                           f"file has {self.checked.size}", code="upload_mismatch",
                           hint=RESTART_HINT)
        span = {n: (offset := (n - 1) * part_size, min(part_size, size - offset))
                for n in range(1, count + 1)}
        with open(self.checked.path, "rb") as f:
            held = {p["part_number"]: p for p in state.get("parts", [])}
            good = {n for n, p in held.items() if n in span and _part_is_ours(f, p, *span[n])}
            missing = [n for n in range(1, count + 1) if n not in good]
            if good:
                self.ctx.out.note(f"resuming: {len(good)} of {count} parts already uploaded")
            progress = self.ctx.out.progress(f"upload ({count} parts)", size,
                                             sum(span[n][1] for n in good))
            batch = state.get("max_parts_per_request", 100)
            for i in range(0, len(missing), batch):
                numbers = missing[i:i + batch]
                urls = {p["part_number"]: p for p in self._presign(numbers)}
                for n in numbers:
                    self._send_part(f, n, urls, span[n], progress)
            progress.finish()

    def _presign(self, numbers: list[int]) -> list[dict]:
        return self.api.call("POST", f"{self.base}/upload/parts", json={"part_numbers": numbers},
                             retry=True)["parts"]

    def _send_part(self, f, n: int, urls: dict, span: tuple[int, int], progress: Progress) -> None:
        what = f"upload part {n}"

        def once():
            part = urls[n]
            return put_bytes(part["url"], part["method"], part["headers"],
                             FileSlice(f, span[0], span[1], progress, self.limit), what)

        def refresh():
            urls[n] = self._presign([n])[0]

        send_with_retries(what, once, refresh)


def _read_package(ctx: Context) -> Checked:
    path = _existing_file(ctx.args.package)
    if ctx.args.no_check:
        return read_package_unchecked(path)
    return check_package(path)


def _prepare_version(ctx: Context, api: Api, app: dict, c: Checked) -> tuple[dict, dict | None]:
    """The version to upload into and its upload (None: already uploaded)."""
    m = c.manifest
    code = m["version_code"]
    v = _get_version(api, app, code)
    if v and v["status"] == "uploading":
        same_file = v["size"] == c.size and v["sha256"] in (None, c.sha256)
        if same_file and not ctx.args.restart:
            try:
                return v, api.call("GET", f"{_version_path(app, code)}/upload")["upload"]
            except CliError as e:
                if e.code != "upload_missing":
                    raise
                ctx.out.note("storage no longer holds the unfinished upload; starting it again")
        elif not ctx.args.restart:
            raise CliError(Exit.CONFLICT, f"version_code {code} has an unfinished upload of a "
                           "different file", code="upload_mismatch",
                           hint=RESTART_HINT)
        api.call("DELETE", f"{_version_path(app, code)}/upload")
        v = None
    if v and v["status"] not in ("failed", "abandoned", "purged"):
        if v["sha256"] == c.sha256:
            return v, None  # this very file is uploaded already
        raise CliError(Exit.CONFLICT, f"version_code {code} of {m['package_id']} exists already "
                       f"({v['status']}) with other content", code="version_exists",
                       hint="raise version_code in manifest.json for a new version")
    created = api.call("POST", f"/v1/apps/{app['id']}/versions", json={
        "version_code": code, "version_name": m["version_name"], "size": c.size, "sha256": c.sha256})
    return created["version"], created["upload"]


def _complete(api: Api, path: str, resend: Callable[[], None]) -> dict:
    for round_ in range(2):
        try:
            return api.call("POST", f"{path}/complete", retry=True)["version"]
        except CliError as e:
            if e.code != "upload_incomplete" or round_:
                raise
            resend()  # parts went missing meanwhile: send them and try once more
    raise AssertionError("unreachable")


def _wait(ctx: Context, api: Api, path: str, version: dict, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    if version["status"] in ("uploading", "validating"):
        ctx.out.note("validating ...")
    while version["status"] in ("uploading", "validating"):
        if time.monotonic() >= deadline:
            raise CliError(Exit.TIMEOUT, f"version_code {version['version_code']} is still "
                           f"{version['status']} after {timeout:g} s", code="still_validating",
                           hint="see the result later with: mosis versions PACKAGE_ID",
                           details={"version": version})
        time.sleep(POLL_SECONDS)
        version = api.call("GET", path)["version"]
    return version


def upload(ctx: Context) -> None:
    args = ctx.args
    if args.publish and args.no_wait:
        raise CliError(Exit.USAGE, "--publish waits for validation; it cannot go with --no-wait",
                       code="conflicting_options")
    checked = _read_package(ctx)
    m = checked.manifest
    api = ctx.api()
    try:
        app = find_app(api, m["package_id"])
    except CliError as e:
        if e.exit_code != Exit.NOT_FOUND or not args.create_app:
            raise
        app = api.call("POST", "/v1/apps", json={"package_id": m["package_id"], "name": m["name"]})["app"]
        ctx.out.note(f"created the app {m['package_id']}")
    version, pending = _prepare_version(ctx, api, app, checked)
    path = _version_path(app, m["version_code"])
    if pending is not None:
        uploader = Uploader(ctx, api, path, checked, args.limit_rate)
        uploader.send(pending)
        version = _complete(api, path, lambda: uploader.send({"kind": "multipart"}))
    else:
        ctx.out.note(f"version_code {m['version_code']} holds this file already")
    if not args.no_wait:
        version = _wait(ctx, api, path, version, args.timeout)
    if version["status"] == "failed":
        err = version.get("error") or {}
        raise CliError(Exit.INVALID, f"the package failed validation: {err.get('message')}",
                       code=err.get("code") or "validation_failed", details={"version": version},
                       hint="fix the package, then upload it again with the same version_code; "
                            + VALIDATION_HINT)
    if args.publish and version["status"] == "draft":
        version = api.call("POST", f"{path}/publish", retry=True)["version"]
    lines = version_lines(app["package_id"], version)
    if version["status"] == "draft":
        lines.append(f"publish it with: mosis publish {app['package_id']} {version['version_code']}")
    ctx.out.result({"app": app, "version": version}, lines)


# -- download ------------------------------------------------------------------------------

def _verify_signature(ctx: Context, api: Api, package_id: str, info: dict) -> tuple[Trust, kr.Key]:
    """The keyring this client follows (updated first, so it knows every
    revocation) and the key behind the download's signature, checked against it."""
    trust = Trust(api, ctx.args.public_key)
    trust.update()
    return trust, trust.check_package(package_id, info)


def _object_size(r: requests.Response) -> int | None:
    """The whole object's size as a 200 or 206 answer states it."""
    if r.status_code == 206:
        total = (r.headers.get("Content-Range") or "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = r.headers.get("Content-Length") or ""
    return int(length) if length.isdigit() else None


def _fetch_round(url: str, part: Path, total: int, progress: Progress, limit: RateLimit) -> None:
    """One GET of what `part` lacks (Range when it holds a prefix)."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        r = requests.get(url, headers=headers, stream=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
    except requests.RequestException as e:
        raise network_error("download", url, e) from None
    with r:
        if r.status_code == 416:  # what we hold is not a prefix of it: start over
            part.unlink()
            raise CliError(Exit.NETWORK, "the partial download did not fit; starting over",
                           code="restart")
        if r.status_code == 206 and not (r.headers.get("Content-Range") or "").startswith(f"bytes {have}-"):
            raise CliError(Exit.SERVER, "storage answered the wrong byte range", code="bad_range")
        if r.status_code not in (200, 206):
            code = "link_expired" if r.status_code == 403 else f"http_{r.status_code}"
            raise CliError(Exit.NOT_FOUND if r.status_code == 404 else Exit.SERVER,
                           f"storage answered HTTP {r.status_code} to the download", code=code)
        stored = _object_size(r)
        if stored is not None and stored != total:
            part.unlink(missing_ok=True)
            raise CliError(Exit.INTEGRITY, f"storage holds {stored} bytes but the signed size is "
                           f"{total}: the package was altered; do not install it", code="size_mismatch",
                           hint=SIGNING_HINT)
        mode = "ab" if r.status_code == 206 else "wb"
        if mode == "wb":
            progress.rewind(progress.done)
        try:
            with open(part, mode) as f:
                for chunk in r.iter_content(CHUNK):
                    f.write(chunk)
                    limit.take(len(chunk))
                    progress.advance(len(chunk))
        except requests.RequestException as e:  # (an OSError too: test it first)
            raise network_error("download", url, e) from None
        except OSError as e:
            raise CliError(Exit.ERROR, f"cannot write {part}: {e}", code="write_failed") from None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK * 4), b""):
            digest.update(chunk)
    return digest.hexdigest()


class PatchUnusable(Exception):
    """Why a delta patch was not used (the full package is downloaded instead)."""


def _patched(ctx: Context, trust: Trust, package_id: str, info: dict, old: Path, old_sha256: str,
             part: Path) -> int:
    """Download the answer's patch, check it, apply it to `old` into `part`;
    return the patch's size. Raises PatchUnusable saying why not."""
    delta = info["delta"]
    if delta.get("algorithm") != "mosis-zipdelta-v1":
        raise PatchUnusable(f"the patch format {delta.get('algorithm')!r} is not one this client applies")
    if delta.get("from_sha256") != old_sha256:
        raise PatchUnusable("the patch was made from another package than the one given with --from")
    message = signed_message(package_id, delta["from_version_code"], delta["from_sha256"], info["version_code"],
                             info["sha256"], delta["sha256"], delta["size"])
    refusal = trust.patch_refusal(delta.get("key_id"), delta.get("signature"), message)
    if refusal is not None:
        raise PatchUnusable(refusal)
    patch = part.with_name(f"{part.name}.patch")
    try:
        try:
            with requests.get(delta["url"], headers={"User-Agent": USER_AGENT}, stream=True,
                              timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)) as r:
                if r.status_code != 200:
                    raise PatchUnusable(f"the edge answered HTTP {r.status_code} to the patch")
                with open(patch, "wb") as f:
                    for chunk in r.iter_content(CHUNK):
                        f.write(chunk)
        except requests.RequestException as e:
            raise PatchUnusable(f"the patch did not download: {e}") from None
        if patch.stat().st_size != delta["size"] or _file_sha256(patch) != delta["sha256"]:
            raise PatchUnusable("the patch is not the one the store signed (size or sha256)")
        try:  # streaming, in bounded memory; checks the source before and the target after
            apply(old, patch, part, expected_target_sha256=info["sha256"], max_target_size=info["size"])
        except DeltaError as e:
            raise PatchUnusable(f"the patch does not apply ({e.code}: {e.message})") from None
        if part.stat().st_size != info["size"] or _file_sha256(part) != info["sha256"]:
            part.unlink()
            raise PatchUnusable("the patched package does not match the signed sha256")
        return delta["size"]
    finally:
        patch.unlink(missing_ok=True)


def download(ctx: Context) -> None:
    args = ctx.args
    package_id = args.package_id
    api = ctx.api(auth=False)  # downloads are public
    old, old_sha256 = None, None
    if args.from_package:
        old = _existing_file(args.from_package)
        old_sha256 = _file_sha256(old)
    query = f"?from_sha256={old_sha256}" if old_sha256 else ""
    info = api.call("GET", f"/v1/packages/{package_id}/download{query}")
    trust, key = _verify_signature(ctx, api, package_id, info)
    out = Path(args.output or f"{package_id}-{info['version_code']}.mosis")
    if out.is_dir():
        out = out / f"{package_id}-{info['version_code']}.mosis"
    result = {"path": str(out), "package_id": package_id, "version": info["version"],
              "version_code": info["version_code"], "size": info["size"], "sha256": info["sha256"],
              "key_id": key.key_id, "signature": "verified"}
    done_line = (f"{out}: {package_id} {info['version']} (version_code {info['version_code']}), "
                 f"{info['size']} bytes, sha256 and signature verified")
    if out.is_file() and out.stat().st_size == info["size"] and \
            hashlib.sha256(out.read_bytes()).hexdigest() == info["sha256"]:
        ctx.out.result(result, done_line + " (already here)")
        return
    part = out.with_name(f"{out.name}.{info['sha256'][:16]}.part")
    if old is not None:
        if "delta" not in info:
            ctx.out.note(f"no patch from {old.name} to version_code {info['version_code']}; "
                         "downloading the full package")
        else:
            try:
                patch_size = _patched(ctx, trust, package_id, info, old, old_sha256,
                                      part.with_name(part.name + ".delta"))
            except (PatchUnusable, OSError) as e:
                ctx.out.note(f"patch not used: {e}; downloading the full package")
            else:
                part.with_name(part.name + ".delta").replace(out)
                saved = info["size"] - patch_size
                result["delta"] = {"size": patch_size, "from_version_code": info["delta"]["from_version_code"],
                                   "saved_bytes": saved}
                ctx.out.result(result, f"{done_line}; patched from {old.name} with a {patch_size}-byte "
                                       f"patch: {saved} bytes saved")
                return
    have = part.stat().st_size if part.exists() else 0
    if have > info["size"]:
        part.unlink()
        have = 0
    if have:
        ctx.out.note(f"resuming the download at byte {have} of {info['size']}")
    progress = ctx.out.progress("download", info["size"], have)
    limit = RateLimit(args.limit_rate)
    failures = 0
    while not part.exists() or part.stat().st_size < info["size"]:
        before = part.stat().st_size if part.exists() else 0
        try:
            _fetch_round(info["download_url"], part, info["size"], progress, limit)
        except CliError as e:
            made_progress = part.exists() and part.stat().st_size > before
            failures = 0 if made_progress else failures + 1
            if e.code == "link_expired":
                fresh = api.call("GET", f"/v1/packages/{package_id}/download")
                if fresh["sha256"] != info["sha256"]:
                    raise CliError(Exit.CONFLICT, "a new version was published during the "
                                   "download; run the command again", code="version_changed") from None
                info = fresh
            elif e.exit_code not in (Exit.NETWORK, Exit.SERVER) or failures >= DOWNLOAD_ROUNDS_WITHOUT_PROGRESS:
                raise
            time.sleep(min(2.0, 0.3 * 2 ** failures))
    progress.finish()
    size, digest = part.stat().st_size, hashlib.sha256()
    with open(part, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK * 4), b""):
            digest.update(chunk)
    if size != info["size"] or digest.hexdigest() != info["sha256"]:
        part.unlink()
        raise CliError(Exit.INTEGRITY, f"the downloaded bytes do not match the signed sha256 "
                       f"({digest.hexdigest()} instead of {info['sha256']}); they were discarded",
                       code="sha256_mismatch", hint=SIGNING_HINT)
    part.replace(out)
    ctx.out.result(result, done_line)


def catalog(ctx: Context) -> None:
    """The store's signed catalog index, verified against the keyring."""
    trust = Trust(ctx.api(auth=False), ctx.args.public_key)
    trust.update()
    index = trust.index()
    rows = [[e.package_id, str(e.version_code), str(e.size), e.key_id] for e in index.packages]
    ctx.out.result({**index.to_json(), "signature": "verified"},
                   table(rows, ["package_id", "version_code", "size", "key_id"])
                   + [f"{len(rows)} apps; index signed by {index.key_id} under keyring version "
                      f"{index.keyring_version}, issued {index.issued_at}, valid until {index.expires}"])


# -- icons and screenshots ----------------------------------------------------------------

def _image(name: str):
    path = _existing_file(name)
    return path.name, open(path, "rb"), mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def icon_set(ctx: Context) -> None:
    api = ctx.api()
    app = find_app(api, ctx.args.package_id)
    name, handle, mime = _image(ctx.args.file)
    with handle:
        body = api.call("PUT", f"/v1/apps/{app['id']}/icon", files={"icon": (name, handle, mime)},
                        retry=True)
    icons = body.get("icons") or {}
    ctx.out.result(body, [f"icon of {app['package_id']} set:"]
                   + [f"  {size}px  {url}" for size, url in sorted(icons.items(), key=lambda i: int(i[0]))])


def screenshots_add(ctx: Context) -> None:
    api = ctx.api()
    app = find_app(api, ctx.args.package_id)
    added = []
    for file in ctx.args.files:
        name, handle, mime = _image(file)
        with handle:
            added.append(api.call("POST", f"/v1/apps/{app['id']}/screenshots",
                                  files={"screenshot": (name, handle, mime)})["screenshot"])
    ctx.out.result({"screenshots": added},
                   [f"added screenshot {s['position']} ({s['width']}x{s['height']}): {s['url']}" for s in added])


def screenshots_list(ctx: Context) -> None:
    api = ctx.api()
    app = find_app(api, ctx.args.package_id)
    shots = api.call("GET", f"/v1/apps/{app['id']}/screenshots")["screenshots"]
    rows = [[str(s["position"]), f"{s['width']}x{s['height']}", s["url"]] for s in shots]
    ctx.out.result({"screenshots": shots}, table(rows, ["POSITION", "SIZE", "URL"])
                   or f"{app['package_id']} has no screenshots")


def screenshots_rm(ctx: Context) -> None:
    api = ctx.api()
    app = find_app(api, ctx.args.package_id)
    body = api.call("DELETE", f"/v1/apps/{app['id']}/screenshots/{int(ctx.args.position)}")
    ctx.out.result(body or {"removed": ctx.args.position},
                   f"removed screenshot {ctx.args.position} of {app['package_id']}")
