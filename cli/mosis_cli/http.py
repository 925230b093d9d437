"""HTTP for `mosis`: JSON calls to the API, byte transfers to and from storage.

Every failure becomes a `CliError` with the exit code of its class; a
network failure is one line (where, and the socket's reason), never the
wrapped exceptions of requests and urllib3. Calls
that are safe to repeat (reads, and the API's idempotent actions) are retried
a few times on network errors and on 502/503/504, honouring Retry-After.
"""

from __future__ import annotations

import errno
import http.client
import os
import re
import socket
import ssl
import time
from typing import BinaryIO, Callable
from urllib.parse import urlsplit

import requests

from mosis_cli.errors import CliError, Exit, exit_for_status
from mosis_cli.progress import Progress, RateLimit

USER_AGENT = "mosis-cli/0.1"
RETRY_STATUSES = (502, 503, 504)
ATTEMPTS = 3
CONNECT_TIMEOUT, READ_TIMEOUT = 10, 120
CHUNK = 256 * 1024


def _backoff(attempt: int, retry_after: str | None = None) -> float:
    if retry_after and retry_after.isdigit():
        return min(float(retry_after), 10.0)
    return 0.3 * 2 ** attempt


def _causes(err: BaseException) -> list[BaseException]:
    """`err` and what it wraps (requests wraps urllib3, which wraps the
    socket's error), breadth first."""
    seen, queue = [], [err]
    while queue:
        e = queue.pop(0)
        if any(e is s for s in seen):
            continue
        seen.append(e)
        queue += [x for x in (*e.args, getattr(e, "reason", None), e.__cause__, e.__context__)
                  if isinstance(x, BaseException)]
    return seen


# The socket's errors that mean no connection was made.
UNREACHABLE = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}


def _reason(err: BaseException) -> tuple[str, bool]:
    """Why a request failed, in a few words (the socket's own error), and
    whether it failed before a connection was made."""
    causes = _causes(err)
    for e in causes:
        if isinstance(e, socket.gaierror):
            return f"unknown host ({e.strerror or e})", True
        if isinstance(e, ssl.SSLError):
            return f"TLS failed ({e.reason or e})", True
        if isinstance(e, OSError) and e.errno:
            return os.strerror(e.errno).lower(), e.errno in UNREACHABLE
    for e in causes:
        if isinstance(e, http.client.RemoteDisconnected):
            return "the connection was closed without an answer", False
        if isinstance(e, http.client.IncompleteRead):
            return "the connection broke off in the middle of the answer", False
    root = causes[-1]
    return (str(root).splitlines() or [type(root).__name__])[0][:200], False


def _where(url: str) -> str:
    """The URL without its query (a presigned URL's signature is noise)."""
    return urlsplit(url)._replace(query="", fragment="").geturl()


def network_error(what: str, url: str, err: Exception) -> CliError:
    """One line: what could not be done, where, and why."""
    where = _where(url)
    if isinstance(err, requests.ConnectTimeout):
        message = f"cannot reach {where}: no connection within {CONNECT_TIMEOUT} s"
    elif isinstance(err, requests.Timeout):
        message = f"{where} did not answer within {READ_TIMEOUT} s"
    else:
        reason, unreachable = _reason(err)
        message = f"cannot reach {where}: {reason}" if unreachable else \
            f"lost the connection to {where}: {reason}"
    return CliError(Exit.NETWORK, f"{what}: {message}" if what else message, code="network_error")


# What to do when the token is not enough.
TOKEN_HINTS = {
    "insufficient_scope": "ask the store's admin (or whoever issued your token) for a token with the "
                          "'{scope}' scope, then `mosis login` with it",
    "token_expired": "your token has expired: get a new one, then `mosis login` with it",
}


class Api:
    """The appliance's JSON API at `url`, as the developer owning `token`."""

    def __init__(self, url: str, token: str | None = None):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, *, json: dict | None = None, files: dict | None = None,
             retry: bool | None = None) -> dict:
        """The decoded JSON answer; `retry` defaults to True for GET and DELETE."""
        retry = method in ("GET", "DELETE") if retry is None else retry
        url = f"{self.url}{path}"
        for attempt in range(ATTEMPTS if retry else 1):
            last = attempt == (ATTEMPTS if retry else 1) - 1
            try:
                if files:  # a fresh read of each file on every attempt
                    for _, (_, handle, _) in files.items():
                        handle.seek(0)
                r = self.session.request(method, url, json=json, files=files,
                                         timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
            except requests.RequestException as e:
                if last:
                    raise network_error("", url, e) from None
                time.sleep(_backoff(attempt))
                continue
            if r.status_code in RETRY_STATUSES and not last:
                time.sleep(_backoff(attempt, r.headers.get("Retry-After")))
                continue
            return self._decode(r, method, url)
        raise AssertionError("unreachable")

    @staticmethod
    def _decode(r: requests.Response, method: str, url: str) -> dict:
        if r.status_code == 204:
            return {}
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code >= 400:
            err = (body or {}).get("error") if isinstance(body, dict) else None
            if isinstance(err, dict):
                code = str(err.get("code") or "error")
                details = err.get("details") or {}
                message, hint = str(err.get("message")), TOKEN_HINTS.get(code)
                if code == "insufficient_scope":
                    message = (f"your token lacks the '{details.get('scope')}' scope this needs "
                               f"({method} {urlsplit(url).path})")
                    hint = hint.format(scope=details.get("scope"))
                raise CliError(exit_for_status(r.status_code, code), message, code=code,
                               details=details, hint=hint)
            raise CliError(exit_for_status(r.status_code), f"{method} {url} answered HTTP "
                           f"{r.status_code}: {r.text[:200].strip()}", code=f"http_{r.status_code}")
        if not isinstance(body, dict):
            raise CliError(Exit.ERROR, f"{method} {url} answered HTTP {r.status_code} with something "
                           "that is not a JSON object; is this a Mosis service?", code="bad_answer")
        return body


# -- storage ------------------------------------------------------------------------------

def storage_error(r: requests.Response, what: str) -> CliError:
    """An S3 error answer (XML) as a CliError."""
    code = re.search(r"<Code>([^<]+)</Code>", r.text or "")
    message = re.search(r"<Message>([^<]+)</Message>", r.text or "")
    detail = f"{code.group(1)}: {message.group(1) if message else ''}" if code else r.text[:200]
    exit_code = Exit.SERVER if r.status_code >= 500 else Exit.REFUSED
    return CliError(exit_code, f"storage refused to {what} (HTTP {r.status_code}, {detail.strip()})",
                    code="storage_error", details={"status": r.status_code})


class FileSlice:
    """`length` bytes of a file from `offset`, read as the request body is
    sent, so memory stays at one chunk; reports progress and obeys a rate cap."""

    def __init__(self, f: BinaryIO, offset: int, length: int, progress: Progress | None = None,
                 limit: RateLimit | None = None):
        self.f, self.offset, self.length = f, offset, length
        self.pos = 0
        self.progress, self.limit = progress, limit

    def __len__(self) -> int:
        return self.length

    def read(self, n: int = -1) -> bytes:
        remaining = self.length - self.pos
        n = remaining if n is None or n < 0 else min(n, remaining)
        if n <= 0:
            return b""
        self.f.seek(self.offset + self.pos)
        data = self.f.read(n)
        self.pos += len(data)
        if self.limit:
            self.limit.take(len(data))
        if self.progress:
            self.progress.advance(len(data))
        return data


def put_bytes(url: str, method: str, headers: dict, body: FileSlice, what: str) -> requests.Response:
    """Send one body to storage; on failure the progress it made is taken back."""
    try:
        r = requests.request(method, url, data=body, headers={**headers, "User-Agent": USER_AGENT},
                             timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
    except requests.RequestException as e:
        if body.progress:
            body.progress.rewind(body.pos)
        raise network_error(what, url, e) from None
    if r.status_code >= 300 and body.progress:
        body.progress.rewind(body.pos)
    return r


def send_with_retries(what: str, attempt_once: Callable[[], requests.Response],
                      refresh: Callable[[], None]) -> requests.Response:
    """Run an upload until storage accepts it: network errors and 5xx are
    retried; an expired or refused URL (403) is refreshed once."""
    refreshed = False
    for attempt in range(ATTEMPTS + 1):
        last = attempt == ATTEMPTS
        try:
            r = attempt_once()
        except CliError as e:
            if e.exit_code != Exit.NETWORK or last:
                raise
            time.sleep(_backoff(attempt))
            continue
        if r.status_code < 300:
            return r
        if r.status_code == 403 and not refreshed:
            refreshed = True
            refresh()
            continue
        if r.status_code >= 500 and not last:
            time.sleep(_backoff(attempt, r.headers.get("Retry-After")))
            continue
        raise storage_error(r, what)
    raise AssertionError("unreachable")
