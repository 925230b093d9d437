"""Validation of `.mosis` packages (ZIP archives) read straight from storage.

The validator trusts nothing in the archive. It works in two steps, so memory
stays bounded whatever the package size:

1. the end of the object (end-of-central-directory record and the central
   directory, fetched with ranged reads) is parsed and every entry is checked:
   names, types, encryption, counts, sizes, compression ratios, overlaps;
2. the whole object is then read once, front to back: sha256 over every byte,
   each local header compared with its central-directory twin, each entry
   inflated to count its real size and check its CRC-32. The manifest is the
   only entry kept, and it is at most 64 KiB.

Every failure is a `PackageInvalid` with a reason code from the design
contract and a message that tells the developer what to fix.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import unicodedata
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from app.config import PackageLimits

MANIFEST_NAME = "manifest.json"
PACKAGE_ID_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
MAX_VERSION_CODE = 2**31 - 1

EOCD_SIG = 0x06054B50
ZIP64_LOCATOR_SIG = 0x07064B50
ZIP64_EOCD_SIG = 0x06064B50
CENTRAL_SIG = 0x02014B50
LOCAL_SIG = 0x04034B50
DESCRIPTOR_SIG = 0x08074B50
EOCD_SIZE, ZIP64_LOCATOR_SIZE, ZIP64_EOCD_MIN = 22, 20, 56
CENTRAL_SIZE, LOCAL_SIZE = 46, 30
MAX_COMMENT = 0xFFFF
STORED, DEFLATED = 0, 8
AES_METHOD = 99
FLAG_ENCRYPTED, FLAG_DESCRIPTOR, FLAG_STRONG_ENCRYPTION, FLAG_UTF8 = 0x1, 0x8, 0x40, 0x800
S_IFMT, S_IFLNK, S_IFREG, S_IFDIR = 0o170000, 0o120000, 0o100000, 0o040000
UNIX_HOST = 3


class PackageInvalid(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class Expected:
    """What the upload must match: the app and the version it was declared as."""

    package_id: str
    version_code: int
    size: int | None = None
    sha256: str | None = None


@dataclass
class Entry:
    name: str
    raw_name: bytes
    flags: int
    method: int
    crc: int
    compressed_size: int
    size: int
    offset: int
    is_dir: bool


@dataclass
class Report:
    size: int
    sha256: str
    manifest: dict
    manifest_bytes: bytes
    entries: int
    unpacked_size: int
    checks: list[str] = field(default_factory=list)


# A reader of byte ranges: (offset, length) -> bytes. Storage provides it.
RangeReader = Callable[[int, int], bytes]


def validate_package(size: int, read_range: RangeReader, stream: Iterable[bytes],
                     expected: Expected, limits: PackageLimits) -> Report:
    """Validate a package of `size` bytes; raise PackageInvalid on any fault."""
    if size > limits.max_package_bytes:
        raise PackageInvalid("too_large", f"the package is {size} bytes; the limit is "
                             f"{limits.max_package_bytes} bytes")
    if expected.size is not None and size != expected.size:
        raise PackageInvalid("size_mismatch", f"the upload is {size} bytes but {expected.size} "
                             "were declared; upload the exact file you declared")
    entries, cd_offset = read_central_directory(size, read_range, limits)
    check_entries(entries, size, limits)
    digest, manifest_bytes, unpacked = _stream_entries(stream, size, entries, cd_offset)
    if expected.sha256 and digest != expected.sha256.lower():
        raise PackageInvalid("sha256_mismatch", f"the upload's sha256 is {digest} but "
                             f"{expected.sha256} was declared")
    if manifest_bytes is None:
        raise _manifest_missing(entries)
    manifest = parse_manifest(manifest_bytes, limits)
    check_manifest_matches(manifest, expected)
    return Report(size=size, sha256=digest, manifest=manifest, manifest_bytes=manifest_bytes,
                  entries=len(entries), unpacked_size=unpacked)


# -- step 1: the central directory ------------------------------------------

def read_central_directory(size: int, read_range: RangeReader,
                           limits: PackageLimits) -> tuple[list[Entry], int]:
    """The archive's entries and where its central directory starts."""
    if size < EOCD_SIZE:
        raise PackageInvalid("invalid_zip", "the file is too short to be a ZIP archive")
    tail_len = min(size, EOCD_SIZE + MAX_COMMENT + ZIP64_LOCATOR_SIZE)
    tail_start = size - tail_len
    tail = read_range(tail_start, tail_len)
    eocd_at = _find_eocd(tail, tail_start, size)
    (_, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, _) = struct.unpack_from(
        "<IHHHHIIH", tail, eocd_at - tail_start)
    archive_end = eocd_at  # where the central directory must end
    if 0xFFFF in (disk, cd_disk, n_disk, n_total) or 0xFFFFFFFF in (cd_size, cd_offset):
        n_total, cd_size, cd_offset, archive_end = _read_zip64_eocd(
            tail, tail_start, eocd_at, read_range, disk)
    elif disk != 0 or cd_disk != 0 or n_disk != n_total:
        raise PackageInvalid("invalid_zip", "multi-volume ZIP archives are not supported")
    if n_total == 0:
        raise PackageInvalid("invalid_zip", "the archive is empty")
    if n_total > limits.max_entries:
        raise PackageInvalid("too_many_entries", f"the archive has {n_total} entries; the limit "
                             f"is {limits.max_entries}")
    if cd_offset + cd_size != archive_end:
        # Offsets in the directory would not point where they claim: junk was
        # prepended, or the archive was cut or spliced.
        raise PackageInvalid("invalid_zip", "the central directory is not where the end record "
                             "says (extra bytes before the archive, or a damaged file)")
    if cd_size > max(1024 * 1024, limits.max_entries * 1024):
        raise PackageInvalid("invalid_zip", f"the central directory is {cd_size} bytes, more than "
                             "any package of allowed size needs")
    if cd_size < n_total * CENTRAL_SIZE:
        raise PackageInvalid("invalid_zip", "the central directory is smaller than its entries")
    cd = read_range(cd_offset, cd_size) if cd_size else b""
    if len(cd) != cd_size:
        raise PackageInvalid("invalid_zip", "the archive is truncated")
    return _parse_central(cd, n_total), cd_offset


def _find_eocd(tail: bytes, tail_start: int, size: int) -> int:
    """The end record is the last one whose comment reaches exactly to the end."""
    sig = struct.pack("<I", EOCD_SIG)
    trailing = False
    pos = tail.rfind(sig, 0, len(tail) - EOCD_SIZE + 4)
    while pos >= 0:
        comment_len = struct.unpack_from("<H", tail, pos + 20)[0]
        end = pos + EOCD_SIZE + comment_len
        if end == len(tail):
            return tail_start + pos
        trailing = trailing or end < len(tail)
        pos = tail.rfind(sig, 0, pos)
    if trailing:
        raise PackageInvalid("invalid_zip", "there are bytes after the end of the archive")
    raise PackageInvalid("invalid_zip", "this is not a ZIP archive (no end-of-central-directory "
                         "record); build the package with `mosis pack` or any zip tool")


def _read_zip64_eocd(tail: bytes, tail_start: int, eocd_at: int, read_range: RangeReader,
                     disk: int) -> tuple[int, int, int, int]:
    loc_at = eocd_at - ZIP64_LOCATOR_SIZE
    if loc_at < tail_start:
        raise PackageInvalid("invalid_zip", "the ZIP64 end record locator is missing")
    sig, loc_disk, rec_offset, disks = struct.unpack_from("<IIQI", tail, loc_at - tail_start)
    if sig != ZIP64_LOCATOR_SIG:
        raise PackageInvalid("invalid_zip", "the ZIP64 end record locator is missing")
    if loc_disk != 0 or disks != 1:
        raise PackageInvalid("invalid_zip", "multi-volume ZIP archives are not supported")
    if rec_offset + ZIP64_EOCD_MIN > loc_at:
        raise PackageInvalid("invalid_zip", "the ZIP64 end record is out of place")
    rec = read_range(rec_offset, ZIP64_EOCD_MIN)
    if len(rec) != ZIP64_EOCD_MIN:
        raise PackageInvalid("invalid_zip", "the archive is truncated")
    (sig, rec_size, _, _, r_disk, r_cd_disk, n_disk, n_total, cd_size, cd_offset) = struct.unpack(
        "<IQHHIIQQQQ", rec)
    if sig != ZIP64_EOCD_SIG:
        raise PackageInvalid("invalid_zip", "the ZIP64 end record is damaged")
    if rec_offset + 12 + rec_size != loc_at:
        raise PackageInvalid("invalid_zip", "there are bytes between the ZIP64 end records")
    if r_disk != 0 or r_cd_disk != 0 or n_disk != n_total:
        raise PackageInvalid("invalid_zip", "multi-volume ZIP archives are not supported")
    return n_total, cd_size, cd_offset, rec_offset


def _parse_central(cd: bytes, count: int) -> list[Entry]:
    entries = []
    pos = 0
    for _ in range(count):
        if pos + CENTRAL_SIZE > len(cd):
            raise PackageInvalid("invalid_zip", "the central directory is truncated")
        (sig, made_by, _, flags, method, _, _, crc, csize, usize, name_len, extra_len,
         comment_len, disk, _, ext_attr, offset) = struct.unpack_from("<IHHHHHHIIIHHHHHII", cd, pos)
        if sig != CENTRAL_SIG:
            raise PackageInvalid("invalid_zip", "the central directory is damaged")
        name_start = pos + CENTRAL_SIZE
        raw_name = cd[name_start:name_start + name_len]
        extra = cd[name_start + name_len:name_start + name_len + extra_len]
        pos = name_start + name_len + extra_len + comment_len
        if pos > len(cd):
            raise PackageInvalid("invalid_zip", "the central directory is truncated")
        usize, csize, offset = _apply_zip64_extra(extra, usize, csize, offset)
        name = _decode_name(raw_name, flags)
        if made_by >> 8 == UNIX_HOST:
            kind = (ext_attr >> 16) & S_IFMT
            if kind == S_IFLNK:
                raise PackageInvalid("symlink", f"{name!r} is a symbolic link; packages may hold "
                                     "only regular files and directories")
            if kind not in (0, S_IFREG, S_IFDIR):
                raise PackageInvalid("unsafe_path", f"{name!r} is a device or other special file")
        entries.append(Entry(name=name, raw_name=raw_name, flags=flags, method=method, crc=crc,
                             compressed_size=csize, size=usize, offset=offset,
                             is_dir=name.endswith("/")))
    if pos != len(cd):
        raise PackageInvalid("invalid_zip", "the central directory holds more than its entries")
    return entries


def _apply_zip64_extra(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + length]
        if tag == 0x0001:
            values = iter(struct.unpack_from(f"<{len(body) // 8}Q", body))
            try:
                if usize == 0xFFFFFFFF:
                    usize = next(values)
                if csize == 0xFFFFFFFF:
                    csize = next(values)
                if offset == 0xFFFFFFFF:
                    offset = next(values)
            except StopIteration:
                raise PackageInvalid("invalid_zip", "a ZIP64 extra field is too short") from None
        pos += 4 + length
    return usize, csize, offset


def _decode_name(raw: bytes, flags: int) -> str:
    if b"\x00" in raw:
        raise PackageInvalid("unsafe_path", f"an entry name contains a NUL byte: {raw!r}")
    try:
        return raw.decode("utf-8") if flags & FLAG_UTF8 else raw.decode("cp437")
    except UnicodeDecodeError:
        raise PackageInvalid("unsafe_path", f"an entry name is not valid UTF-8: {raw!r}") from None


def check_name(name: str) -> None:
    """Refuse any name that could escape the directory it is unpacked into."""
    problem = _name_problem(name)
    if problem is None:
        # Look again after Unicode compatibility folding, which turns e.g.
        # FULLWIDTH SOLIDUS into "/" and ONE DOT LEADER pairs into "..".
        folded = unicodedata.normalize("NFKC", name)
        if folded != name:
            problem = _name_problem(folded)
            if problem:
                problem += " after Unicode normalisation"
    if problem:
        raise PackageInvalid("unsafe_path", f"unsafe entry name {name!r}: {problem}")


def _name_problem(name: str) -> str | None:
    if not name or name == "/":
        return "the name is empty"
    if "\\" in name:
        return "it contains a backslash"
    if name.startswith("/"):
        return "it is an absolute path"
    if re.match(r"^[A-Za-z]:", name):
        return "it starts with a drive letter"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "it contains a control character"
    if any(unicodedata.category(c) in ("Cf", "Zl", "Zp") for c in name):
        return "it contains an invisible formatting character"
    parts = name.rstrip("/").split("/")
    if any(p in ("..", ".") for p in parts):
        return "it contains a '.' or '..' component"
    if any(p == "" for p in parts):
        return "it contains an empty path component"
    return None


def check_entries(entries: list[Entry], size: int, limits: PackageLimits) -> None:
    seen: dict[str, str] = {}
    total = 0
    for e in entries:
        check_name(e.name)
        key = unicodedata.normalize("NFC", e.name.rstrip("/")).casefold()
        if key in seen:
            raise PackageInvalid("duplicate_entry", f"{e.name!r} appears twice (or differs from "
                                 f"{seen[key]!r} only by case or Unicode form)")
        seen[key] = e.name
        if e.flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION) or e.method == AES_METHOD:
            raise PackageInvalid("encrypted_entry", f"{e.name!r} is encrypted; packages must not "
                                 "be password-protected")
        if e.method not in (STORED, DEFLATED):
            raise PackageInvalid("invalid_zip", f"{e.name!r} uses compression method {e.method}; "
                                 "only stored and deflate are accepted")
        if e.is_dir and e.size:
            raise PackageInvalid("invalid_zip", f"directory entry {e.name!r} has content")
        if e.method == STORED and e.size != e.compressed_size:
            raise PackageInvalid("invalid_zip", f"stored entry {e.name!r} has different packed "
                                 "and unpacked sizes")
        total += e.size
        if total > limits.max_unpacked_bytes:
            raise PackageInvalid("too_large_unpacked", "the archive unpacks to more than "
                                 f"{limits.max_unpacked_bytes} bytes")
        if e.size > limits.compression_ratio_floor and e.size > limits.max_compression_ratio * max(
                e.compressed_size, 1):
            raise PackageInvalid("compression_ratio", f"{e.name!r} inflates {e.size} bytes from "
                                 f"{e.compressed_size} (ratio over {limits.max_compression_ratio:g}); "
                                 "this looks like a zip bomb")
    if total > limits.compression_ratio_floor and total > limits.max_compression_ratio * size:
        raise PackageInvalid("compression_ratio", f"the archive inflates {total} bytes from {size} "
                             f"(ratio over {limits.max_compression_ratio:g}); this looks like a zip bomb")
    # Entries must lie one after another, each alone in its span of the file:
    # overlapping entries are how "quoted overlap" zip bombs multiply data.
    by_offset = sorted(entries, key=lambda e: e.offset)
    for a, b in zip(by_offset, by_offset[1:]):
        if b.offset < a.offset + LOCAL_SIZE + len(a.raw_name) + a.compressed_size:
            raise PackageInvalid("invalid_zip", f"entries {a.name!r} and {b.name!r} overlap "
                                 "(a zip bomb technique)")
    if by_offset[0].offset != 0:
        raise PackageInvalid("invalid_zip", "the archive does not start with its first entry "
                             "(extra bytes before the archive)")


def _manifest_missing(entries: list[Entry]) -> PackageInvalid:
    nested = [e.name for e in entries if e.name.rsplit("/", 1)[-1].lower() == MANIFEST_NAME]
    if nested:
        return PackageInvalid("manifest_missing", f"{MANIFEST_NAME} must be at the archive root; "
                              f"found {nested[0]!r} instead")
    return PackageInvalid("manifest_missing", f"the archive has no {MANIFEST_NAME} at its root")


# -- step 2: one pass over the bytes ----------------------------------------------

class _Reader:
    """Sequential reader over a chunk iterator that hashes every byte once."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buf = memoryview(b"")
        self.hash = hashlib.sha256()
        self.pos = 0

    def _fill(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self.hash.update(chunk)
                self._buf = memoryview(chunk)
                return True
        return False

    def pieces(self, n: int) -> Iterator[memoryview]:
        """Yield the next n bytes in pieces (no copy, no buffering of n)."""
        while n > 0:
            if not self._buf and not self._fill():
                raise PackageInvalid("invalid_zip", "the archive is truncated")
            piece = self._buf[:n]
            self._buf = self._buf[len(piece):]
            self.pos += len(piece)
            n -= len(piece)
            yield piece

    def read(self, n: int) -> bytes:
        return b"".join(bytes(p) for p in self.pieces(n))

    def drain(self) -> None:
        self.pos += len(self._buf)
        self._buf = memoryview(b"")
        while self._fill():
            self.pos += len(self._buf)
            self._buf = memoryview(b"")


def _stream_entries(chunks: Iterable[bytes], size: int, entries: list[Entry], cd_offset: int):
    reader = _Reader(chunks)
    manifest = None
    unpacked = 0
    for e in sorted(entries, key=lambda e: e.offset):
        if reader.pos != e.offset:
            raise PackageInvalid("invalid_zip", f"unexpected bytes before entry {e.name!r}")
        header = reader.read(LOCAL_SIZE)
        (sig, _, flags, method, _, _, _, _, _, name_len, extra_len) = struct.unpack(
            "<IHHHHHIIIHH", header)
        if sig != LOCAL_SIG:
            raise PackageInvalid("invalid_zip", f"the local header of {e.name!r} is damaged")
        raw_name = reader.read(name_len)
        if raw_name != e.raw_name:
            raise PackageInvalid("invalid_zip", f"the local header names {raw_name!r} but the "
                                 f"central directory names {e.raw_name!r}")
        if (flags & FLAG_ENCRYPTED) != (e.flags & FLAG_ENCRYPTED) or method != e.method:
            raise PackageInvalid("invalid_zip", f"the local header of {e.name!r} disagrees with "
                                 "the central directory")
        for _ in reader.pieces(extra_len):
            pass
        keep = e.name == MANIFEST_NAME
        data = _inflate(e, reader.pieces(e.compressed_size), keep)
        unpacked += e.size
        if keep:
            manifest = data
        if e.flags & FLAG_DESCRIPTOR:
            _skip_descriptor(reader, e)
    if reader.pos != cd_offset:
        raise PackageInvalid("invalid_zip", "there are unexpected bytes between the last entry "
                             "and the central directory")
    reader.drain()
    if reader.pos != size:
        raise PackageInvalid("invalid_zip", f"read {reader.pos} bytes but the object has {size}")
    return reader.hash.hexdigest(), manifest, unpacked


def _inflate(e: Entry, pieces: Iterable[memoryview], keep: bool) -> bytes | None:
    """Unpack one entry as it streams by: count its bytes and check its CRC."""
    crc = 0
    produced = 0
    kept = bytearray() if keep else None
    inflater = zlib.decompressobj(-15) if e.method == DEFLATED else None
    limit = e.size + 1  # one byte past the declared size proves it lies

    def take(out: bytes) -> None:
        nonlocal crc, produced
        produced += len(out)
        if produced > e.size:
            raise PackageInvalid("invalid_zip", f"{e.name!r} unpacks to more than its declared "
                                 f"{e.size} bytes")
        crc = zlib.crc32(out, crc)
        if kept is not None:
            kept.extend(out)

    try:
        for piece in pieces:
            if inflater is None:
                take(piece)
                continue
            out = inflater.decompress(piece, limit - produced)
            take(out)
            while inflater.unconsumed_tail:
                out = inflater.decompress(inflater.unconsumed_tail, limit - produced)
                if not out:
                    break
                take(out)
        if inflater is not None:
            take(inflater.flush())
            if not inflater.eof:
                raise PackageInvalid("invalid_zip", f"the compressed data of {e.name!r} is cut short")
    except zlib.error as err:
        raise PackageInvalid("invalid_zip", f"the compressed data of {e.name!r} is damaged "
                             f"({err})") from None
    if produced != e.size:
        raise PackageInvalid("invalid_zip", f"{e.name!r} unpacks to {produced} bytes, not the "
                             f"declared {e.size}")
    if crc != e.crc:
        raise PackageInvalid("crc_mismatch", f"the CRC-32 of {e.name!r} does not match its data "
                             "(the file is corrupt)")
    return bytes(kept) if kept is not None else None


def _skip_descriptor(reader: _Reader, e: Entry) -> None:
    head = reader.read(4)
    has_sig = struct.unpack("<I", head)[0] == DESCRIPTOR_SIG
    wide = e.size >= 0xFFFFFFFF or e.compressed_size >= 0xFFFFFFFF
    rest = (20 if wide else 12) - (0 if has_sig else 4)
    reader.read(rest)


# -- the manifest ---------------------------------------------------------------

def _no_duplicate_keys(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise PackageInvalid("manifest_invalid", f"{MANIFEST_NAME} has the key {k!r} twice")
        obj[k] = v
    return obj


def parse_manifest(data: bytes, limits: PackageLimits) -> dict:
    if len(data) > limits.max_manifest_bytes:
        raise PackageInvalid("manifest_invalid", f"{MANIFEST_NAME} is {len(data)} bytes; the "
                             f"limit is {limits.max_manifest_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PackageInvalid("manifest_invalid", f"{MANIFEST_NAME} is not UTF-8") from None
    try:
        manifest = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise PackageInvalid("manifest_invalid", f"{MANIFEST_NAME} is not valid JSON: {e}") from None
    check_manifest_fields(manifest)
    return manifest


def check_manifest_fields(m) -> None:
    def bad(msg: str):
        raise PackageInvalid("manifest_invalid", f"{MANIFEST_NAME}: {msg}")

    if not isinstance(m, dict):
        bad("must be a JSON object")
    for key in ("package_id", "version_code", "version_name", "name"):
        if key not in m:
            bad(f"the required field {key!r} is missing")
    pid = m["package_id"]
    if not isinstance(pid, str) or len(pid) > 128 or not PACKAGE_ID_RE.match(pid):
        bad("package_id must look like com.example.app (lower-case segments separated by dots, "
            "at most 128 characters)")
    code = m["version_code"]
    if not isinstance(code, int) or isinstance(code, bool) or not 1 <= code <= MAX_VERSION_CODE:
        bad(f"version_code must be an integer from 1 to {MAX_VERSION_CODE}")
    for key, longest in (("version_name", 64), ("name", 80)):
        value = m[key]
        if not isinstance(value, str) or not 1 <= len(value) <= longest:
            bad(f"{key} must be a string of 1 to {longest} characters")
    perms = m.get("permissions", [])
    if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
        bad("permissions must be a list of strings")
    if "min_platform" in m:
        mp = m["min_platform"]
        if not isinstance(mp, int) or isinstance(mp, bool) or mp < 0:
            bad("min_platform must be a non-negative integer")


def check_manifest_matches(m: dict, expected: Expected) -> None:
    if m["package_id"] != expected.package_id:
        raise PackageInvalid("package_id_mismatch", f"the manifest's package_id is "
                             f"{m['package_id']!r} but this app is {expected.package_id!r}")
    if m["version_code"] != expected.version_code:
        raise PackageInvalid("version_code_mismatch", f"the manifest's version_code is "
                             f"{m['version_code']} but the upload was declared as "
                             f"{expected.version_code}")
