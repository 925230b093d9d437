"""Synthetic app packages in successive versions, for the delta codec's
tests, its test vectors and its benchmark.

A version is a list of `Member`s (name, bytes, how stored); `evolve` makes
the next version by changing a share of the entries the way releases do:
code gets lines edited and inserted, text gets strings changed, media is
replaced by a new file, and the manifest's version moves on. Everything is
seeded: the same arguments give the same bytes.
"""

from __future__ import annotations

import json
import random
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

EPOCH = (1980, 1, 1, 0, 0, 0)
STORED, DEFLATED = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED
WORDS = [w.encode() for w in (
    "const let var function return if else for while of in new this class extends import export from "
    "await async try catch throw null undefined true false value index count items state props render "
    "update delete create select filter map reduce length push pop slice join split trim format parse "
    "user name title label button view layout style color width height margin padding border text").split()]


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes
    method: int = DEFLATED
    level: int = 6
    # A raw deflate stream to store instead of zlib's (another deflater's output).
    raw: bytes | None = None


def code(rnd: random.Random, size: int) -> bytes:
    """Source-like text: indented statements over a small vocabulary."""
    lines, total, depth = [], 0, 0
    while total < size:
        words = b" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(2, 9)))
        line = b"  " * depth + words + rnd.choice([b";", b" {", b"", b");", b" = " + str(rnd.randint(0, 999)).encode() + b";"])
        depth = min(6, depth + 1) if line.endswith(b"{") else max(0, depth - (rnd.random() < 0.2))
        lines.append(line)
        total += len(line) + 1
    return b"\n".join(lines)[:size]


def text(rnd: random.Random, size: int) -> bytes:
    """A JSON table of strings, like translations or settings."""
    table, total = {}, 0
    while total < size:
        key = "_".join(rnd.choice(WORDS).decode() for _ in range(3)) + str(len(table))
        value = " ".join(rnd.choice(WORDS).decode() for _ in range(rnd.randint(3, 14)))
        table[key] = value
        total += len(key) + len(value) + 8
    return json.dumps(table, indent=1).encode()[:size]


def media(rnd: random.Random, size: int) -> bytes:
    """Already-compressed bytes (images, audio): incompressible."""
    return rnd.randbytes(size)


def app_members(seed: int, entries: int = 120, scale: int = 1, version: int = 1) -> list[Member]:
    """An app: a manifest, then code, text and media files (media half
    stored, half deflated, as packers do both). `scale` multiplies sizes."""
    rnd = random.Random(seed)
    out = [Member("manifest.json", _manifest(version))]
    for i in range(entries):
        kind = rnd.choices(["code", "text", "media"], weights=[5, 3, 2])[0]
        if kind == "code":
            out.append(Member(f"src/module_{i:04d}.js", code(rnd, rnd.randint(2_000, 40_000) * scale)))
        elif kind == "text":
            out.append(Member(f"res/strings_{i:04d}.json", text(rnd, rnd.randint(1_000, 20_000) * scale)))
        else:
            out.append(Member(f"assets/media_{i:04d}.bin", media(rnd, rnd.randint(10_000, 400_000) * scale),
                              STORED if i % 2 else DEFLATED))
    return out


def _manifest(version: int) -> bytes:
    return json.dumps({"package_id": "com.example.synthetic", "version_code": version,
                       "version_name": f"1.{version}", "name": "Synthetic"}).encode()


def evolve(members: list[Member], share: float, seed: int, version: int = 2) -> list[Member]:
    """The next version: about `share` of the entries changed as releases
    change them, the manifest's version bumped."""
    rnd = random.Random(seed)
    out = []
    for m in members:
        if m.name == "manifest.json":
            out.append(replace(m, data=_manifest(version)))
        elif rnd.random() < share:
            out.append(replace(m, data=change(rnd, m)))
        else:
            out.append(m)
    return out


def change(rnd: random.Random, m: Member) -> bytes:
    if m.name.startswith("assets/"):
        return media(rnd, len(m.data))
    lines = m.data.split(b"\n")
    for _ in range(rnd.randint(1, 6)):
        at = rnd.randrange(len(lines))
        if rnd.random() < 0.5:
            lines.insert(at, code(rnd, rnd.randint(20, 200)))
        else:
            lines[at] = lines[at].replace(rnd.choice(WORDS), rnd.choice(WORDS), 1) + b" // changed"
    return b"\n".join(lines)


def write_zip(path: Path, members: list[Member], *, force_zip64: bool = False,
              descriptors: bool = False) -> Path:
    """A reproducible ZIP (fixed times) of `members`, in order; with
    `descriptors`, written as to a pipe (sizes and CRCs after the data)."""
    with open(path, "wb") as f:
        with zipfile.ZipFile(_Unseekable(f) if descriptors else f, "w") as z:
            for m in members:
                info = zipfile.ZipInfo(m.name, date_time=EPOCH)
                info.external_attr = 0o644 << 16
                info.compress_type = m.method
                if m.raw is not None:
                    _write_raw(z, info, m)
                elif force_zip64:
                    with z.open(info, "w", force_zip64=True) as w:
                        w.write(m.data)
                else:
                    z.writestr(info, m.data, compresslevel=m.level)
    return path


class _Unseekable:
    def __init__(self, f):
        self.f = f

    def write(self, data):
        return self.f.write(data)

    def tell(self):
        return self.f.tell()

    def seekable(self):
        return False

    def flush(self):
        self.f.flush()


def _write_raw(z: zipfile.ZipFile, info: zipfile.ZipInfo, m: Member) -> None:
    """An entry whose deflate stream is `m.raw`, as another deflater made it."""
    info.CRC = zlib.crc32(m.data)
    info.file_size = len(m.data)
    info.compress_size = len(m.raw)
    info.header_offset = z.fp.tell()
    z.fp.write(info.FileHeader())
    z.fp.write(m.raw)
    z.start_dir = z.fp.tell()
    z.filelist.append(info)
    z.NameToInfo[info.filename] = info
    z._didModify = True


def foreign_deflate(data: bytes) -> bytes:
    """A valid raw deflate stream that zlib's search will not reproduce:
    a 1 KiB window, which no common packer uses."""
    c = zlib.compressobj(6, zlib.DEFLATED, -10)
    return c.compress(data) + c.flush()


def app_files(seed: int, version: int) -> dict[str, bytes]:
    """An app whose versions differ a little; `seed` picks the app."""
    rnd = random.Random(seed)
    words = [bytes(rnd.choice(b"abcdefghijklmnop") for _ in range(6)) for _ in range(400)]
    code = b"\n".join(b"function f%d() { return '%s'; }" % (i, rnd.choice(words)) for i in range(4000))
    media = rnd.randbytes(60_000)  # already compressed: the same in every version
    return {"app/main.js": code.replace(b"f17()", b"f17_v%d()" % version), "media/intro.bin": media}
