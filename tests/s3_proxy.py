"""A stand-in for a hosted S3 provider that lacks some calls: a small proxy on
127.0.0.1 that forwards S3 requests to the session's SeaweedFS and answers the
calls it is told to refuse as such a provider does (by query parameter, e.g.
`policy`, `lifecycle`, `tagging`, `uploads`, or "create" for CreateBucket).
"""

from __future__ import annotations

import http.client
import http.server
from urllib.parse import urlparse

NOT_IMPLEMENTED = (501, "NotImplemented")


class RefusingProxy(http.server.ThreadingHTTPServer):
    """Forwards S3 requests to a real server, except the calls in `refuse`
    (by query parameter, or "create" for CreateBucket), answered as a hosted
    provider does."""

    daemon_threads = True

    def __init__(self, upstream_port: int, refuse: dict[str, tuple[int, str]]):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream_port, self.refuse, self.refused = upstream_port, refuse, []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _refusal(self):
        parsed = urlparse(self.path)
        params = {p.split("=")[0] for p in parsed.query.split("&") if p}
        for name, answer in self.server.refuse.items():
            if name in params or (name == "create" and self.command == "PUT" and not parsed.query
                                  and parsed.path.strip("/").count("/") == 0):
                return name, answer
        return None

    def _handle(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        refusal = self._refusal()
        if refusal:
            name, (status, code) = refusal
            self.server.refused.append(name)
            payload = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                       f'<Message>not supported here</Message></Error>').encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(k, v)
        # A HEAD answer has no body: its Content-Length is the object's size.
        length = resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle
