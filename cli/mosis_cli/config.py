"""Where `mosis` keeps the service URL and the developer's token.

`$XDG_CONFIG_HOME/mosis/config.json` (else `~/.config/mosis/config.json`),
readable by its owner only. `MOSIS_URL` and `MOSIS_TOKEN` override it.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from mosis_cli.errors import CliError, Exit


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mosis" / "config.json"


def normalise_url(url: str) -> str:
    parsed = urlparse(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CliError(Exit.USAGE, f"{url!r} is not an http(s) URL", code="invalid_url",
                       hint="give the service's address, e.g. https://store.example.com")
    return url.strip().rstrip("/")


@dataclass(frozen=True)
class Credentials:
    url: str | None
    token: str | None
    source: str  # where they came from, for messages

    def require_url(self) -> str:
        if not self.url:
            raise CliError(Exit.AUTH, "no service URL: you are not logged in", code="not_logged_in",
                           hint="run `mosis login --url URL --token TOKEN`, or set MOSIS_URL "
                                "and MOSIS_TOKEN")
        return self.url

    def require_token(self) -> str:
        self.require_url()
        if not self.token:
            raise CliError(Exit.AUTH, "no token: you are not logged in", code="not_logged_in",
                           hint="run `mosis login --url URL --token TOKEN`, or set MOSIS_TOKEN")
        return self.token


def load() -> Credentials:
    path = config_path()
    stored: dict = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CliError(Exit.ERROR, f"cannot read {path}: {e}", code="bad_config",
                           hint="run `mosis login` again to rewrite it") from None
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            print(f"warning: {path} is readable by others; run: chmod 600 {path}", file=sys.stderr)
    url = os.environ.get("MOSIS_URL") or stored.get("url")
    token = os.environ.get("MOSIS_TOKEN") or stored.get("token")
    source = "environment" if os.environ.get("MOSIS_TOKEN") else str(path)
    return Credentials(normalise_url(url) if url else None, token, source)


def save(url: str, token: str) -> Path:
    """Write the config so that only its owner can read it, atomically."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".config.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token}, f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o600)  # in case the umask or an old file said otherwise
    os.replace(tmp, path)
    return path


def forget() -> bool:
    path = config_path()
    if path.exists():
        path.unlink()
        return True
    return False
