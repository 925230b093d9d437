"""A corpus of hostile, broken and valid-but-unusual `.mosis` packages, built at test time.

Each `Case` builds its package for a given app (package_id) and version
code, so the manifest is right and only the fault the case is about is
wrong; `code` is the reason code validation must give (None: it must pass)
and `says` a piece of text the message must contain, so the developer is
told what to fix. docs/validation.md lists the codes and what triggers them.

Where `zipfile` cannot produce a case, the archive is laid out byte by byte
with `raw_zip` (local headers, central directory, end records), which lets
any field be set to anything.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import random
import struct
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Callable

from app.platform.config import MiB, PackageLimits

STORED, DEFLATED = 0, 8
UTF8 = 0x800
UNIX = 3 << 8 | 20  # "made by": Unix, spec 2.0
DOS = 0 << 8 | 20


def crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def deflate(data: bytes, level: int = 6) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


@functools.lru_cache(maxsize=None)
def text(n: int, seed: int = 1) -> bytes:
    """n bytes of word-like text (compresses about 3:1, like source code)."""
    rnd = random.Random(seed)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9)))
             for _ in range(3000)]
    out = bytearray()
    while len(out) < n:
        out += b" ".join(rnd.choices(words, k=4096)) + b"\n"
    return bytes(out[:n])


def noise(n: int, seed: int = 2) -> bytes:
    return random.Random(seed).randbytes(n)


# -- a ZIP writer that does what it is told ---------------------------------------

@dataclass
class Item:
    """One entry; every field of its headers can be overridden."""

    name: str | bytes
    data: bytes = b""
    method: int = DEFLATED
    flags: int | None = None  # default: UTF-8 flag for non-ASCII str names
    made_by: int = UNIX
    mode: int | None = 0o100644  # Unix mode in the external attributes (None: 0)
    packed: bytes | None = None  # the stored bytes (default: data, compressed by method)
    crc: int | None = None
    size: int | None = None
    csize: int | None = None
    cd_extra: bytes = b""
    local_extra: bytes = b""
    local_name: bytes | None = None
    local: dict = field(default_factory=dict)  # local header overrides: method, flags, crc, csize, size
    descriptor: bool = False
    descriptor_sig: bool = True
    offset: int | None = None  # central directory offset override
    before: bytes = b""  # bytes placed before the local header (a gap)
    raw_local: bytes | None = None  # a whole local record written as is

    @property
    def raw_name(self) -> bytes:
        return self.name if isinstance(self.name, bytes) else self.name.encode("utf-8")

    @property
    def flag_bits(self) -> int:
        if self.flags is not None:
            return self.flags
        utf8 = isinstance(self.name, str) and not self.name.isascii()
        return (UTF8 if utf8 else 0) | (0x08 if self.descriptor else 0)


def raw_zip(items: list[Item], comment: bytes = b"", prefix: bytes = b"", suffix: bytes = b"",
            prefix_in_offsets: bool = False, zip64_end: str | None = None,
            eocd: dict | None = None) -> bytes:
    """Lay out an archive byte by byte.

    prefix: bytes before the archive; offsets count from the archive's start
    unless prefix_in_offsets (what `zip -A` does to self-extractors).
    zip64_end: "maxed" writes ZIP64 end records and 0xFFFF.. in the end
    record; "exact" writes them and keeps the real values in the end record.
    """
    out = bytearray(prefix)
    base = 0 if prefix_in_offsets else len(prefix)
    central = bytearray()
    for it in items:
        out += it.before
        offset = len(out) - base
        packed = it.packed if it.packed is not None else (
            deflate(it.data) if it.method == DEFLATED else it.data)
        c = crc(it.data) if it.crc is None else it.crc
        size = len(it.data) if it.size is None else it.size
        csize = len(packed) if it.csize is None else it.csize
        flags = it.flag_bits
        if it.raw_local is not None:
            out += it.raw_local
        else:
            lv = dict(method=it.method, flags=flags, crc=c, csize=csize, size=size)
            if it.descriptor:
                lv.update(crc=0, csize=0, size=0)
            lv.update(it.local)
            lname = it.raw_name if it.local_name is None else it.local_name
            out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, lv["flags"], lv["method"], 0,
                               0x21, lv["crc"], lv["csize"], lv["size"], len(lname),
                               len(it.local_extra))
            out += lname + it.local_extra + packed
            if it.descriptor:
                out += (b"PK\x07\x08" if it.descriptor_sig else b"") + struct.pack("<III", c, csize, size)
        ext = (it.mode << 16) if it.mode is not None else 0
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", it.made_by, 20, flags,
                               it.method, 0, 0x21, c, csize, size, len(it.raw_name),
                               len(it.cd_extra), 0, 0, 0, ext,
                               offset if it.offset is None else it.offset)
        central += it.raw_name + it.cd_extra
    cd_offset = len(out) - base
    out += central
    n = len(items)
    values = dict(disk=0, cd_disk=0, n_disk=n, n_total=n, cd_size=len(central), cd_offset=cd_offset)
    if zip64_end:
        record_at = len(out) - base
        out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, len(central),
                           cd_offset)
        out += struct.pack("<4sIQI", b"PK\x06\x07", 0, record_at, 1)
        if zip64_end == "maxed":
            values.update(n_disk=0xFFFF, n_total=0xFFFF, cd_size=0xFFFFFFFF, cd_offset=0xFFFFFFFF)
    values.update(eocd or {})
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", values["disk"], values["cd_disk"],
                       values["n_disk"], values["n_total"], values["cd_size"], values["cd_offset"],
                       len(comment))
    out += comment + suffix
    return bytes(out)


def zip_bytes(files: dict[str, bytes] | list[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED,
              **zipfile_kwargs) -> bytes:
    """An archive written by Python's zipfile (a real-world writer)."""
    buf = io.BytesIO()
    pairs = files.items() if isinstance(files, dict) else files
    with zipfile.ZipFile(buf, "w", compression=compression, **zipfile_kwargs) as z:
        for name, data in pairs:
            z.writestr(name, data)
    return buf.getvalue()


# -- manifests ---------------------------------------------------------------------

def manifest(pid: str, code: int, **changes) -> dict:
    m = {"package_id": pid, "version_code": code, "version_name": f"1.0.{code}",
         "name": "Corpus App", "permissions": ["network"], "min_platform": 1}
    for k, v in changes.items():
        if v is DROP:
            m.pop(k, None)
        else:
            m[k] = v
    return m


DROP = object()


def manifest_item(pid: str, code: int, raw: bytes | None = None, **changes) -> Item:
    data = raw if raw is not None else json.dumps(manifest(pid, code, **changes)).encode()
    return Item("manifest.json", data)


APP_FILES = [("app/main.js", b"console.log('hello');\n" * 40), ("assets/logo.png", noise(3000))]


def pkg(pid: str, code: int, *extra: Item, **opts) -> bytes:
    """A normal package (manifest and two files) plus `extra` entries."""
    items = [manifest_item(pid, code)] + [Item(n, d) for n, d in APP_FILES] + list(extra)
    return raw_zip(items, **opts)


def with_manifest(pid: str, code: int, *items: Item, **opts) -> bytes:
    return raw_zip([manifest_item(pid, code), *items], **opts)


# -- zip bombs ------------------------------------------------------------------------

def zeros_entry(name: str, n: int) -> Item:
    return Item(name, bytes(n))


def quoted_overlap(pid: str, code: int, files: int = 5, kernel_size: int = 1024) -> bytes:
    """Fifield's non-recursive bomb: each entry's data quotes the next local header.

    Every entry is a valid DEFLATE stream with a right CRC-32, but they
    overlap, so the one compressed kernel is unpacked once per entry.
    """
    names = [f"f{i}.bin".encode() for i in range(files)]
    headers, streams, outputs = [b""] * files, [b""] * files, [b""] * files
    stream, output = deflate(bytes(kernel_size)), bytes(kernel_size)
    for i in reversed(range(files)):
        streams[i], outputs[i] = stream, output
        headers[i] = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, DEFLATED, 0, 0x21,
                                 crc(output), len(stream), len(output), len(names[i]), 0) + names[i]
        # A non-final stored DEFLATE block whose content is the next header.
        quote = b"\x00" + struct.pack("<HH", len(headers[i]), len(headers[i]) ^ 0xFFFF)
        stream, output = quote + headers[i] + stream, headers[i] + output
    man = manifest_item(pid, code)
    man_record = 30 + len(man.raw_name) + len(deflate(man.data))
    items = [man, Item(names[0], outputs[0], packed=streams[0], raw_local=headers[0] + streams[0])]
    at = man_record
    for i in range(1, files):
        at += len(headers[i - 1]) + 5  # the next header follows a header and a quote's head
        items.append(Item(names[i], outputs[i], packed=streams[i], raw_local=b"", offset=at))
    return raw_zip(items)


def nested(levels: int, copies: int, leaf: dict[str, bytes]) -> bytes:
    """An archive of `copies` archives of ... (`levels` deep) of the leaf files."""
    data = zip_bytes(leaf)
    for _ in range(levels - 1):
        data = zip_bytes([(f"layer{i}.zip", data) for i in range(copies)])
    return data


# -- the cases ---------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    code: str | None  # the reason code; None: the package is valid
    build: Callable[[str, int], bytes]
    says: str = ""  # text the failure message must contain
    limits: dict = field(default_factory=dict)  # PackageLimits overrides for this case
    declare_size: Callable[[bytes], int] = len
    declare_sha256: Callable[[bytes], str | None] = lambda data: None
    via_api: bool = True  # can it be declared and uploaded through the API at all?

    def package_limits(self, base: PackageLimits | None = None) -> PackageLimits:
        return dataclasses.replace(base or PackageLimits(), **self.limits)


def _prefixed_levels(levels: int) -> bytes:
    """An archive of an archive of ... (`levels` deep), each after 4 junk bytes."""
    data = zip_bytes({"x.txt": b"x"})
    for i in range(levels - 1):
        data = zip_bytes([(f"layer{i}.zip", b"JUNK" + data)])
    return b"JUNK" + data


def _path_case(name: str, entry: str | bytes, says: str, **item) -> Case:
    return Case(name, "unsafe_path", lambda p, c: pkg(p, c, Item(entry, b"#!/bin/sh\nrm -rf ~\n", **item)),
                says)


# The start of a hand-written manifest; $PID and $CODE are filled in per app.
RAW_HEAD = b'{"package_id": "$PID", "version_code": $CODE, "version_name": "1", '


def _manifest_case(label: str, says: str, raw: bytes | None = None, **changes) -> Case:
    def build(p, c):
        return raw_zip([manifest_item(p, c, raw=raw if raw is None else raw.replace(b"$PID", p.encode())
                                      .replace(b"$CODE", str(c).encode()), **changes),
                        *[Item(n, d) for n, d in APP_FILES]])
    return Case(label, "manifest_invalid", build, says)


def _swap_case(label: str, code: str, says: str, **changes) -> Case:
    return Case(label, code, lambda p, c: raw_zip([manifest_item(p, c, **changes)]), says)


def _unicode_path_field(name: str, raw_name: bytes) -> bytes:
    body = b"\x01" + struct.pack("<I", crc(raw_name)) + name.encode("utf-8")
    return struct.pack("<HH", 0x7075, len(body)) + body


def _asi_symlink(target: bytes) -> bytes:
    body = struct.pack("<IHIHH", 0, 0o120777, len(target), 0, 0) + target
    body = struct.pack("<I", crc(body[4:])) + body[4:]
    return struct.pack("<HH", 0x756E, len(body)) + body


def _aes_extra() -> bytes:
    body = struct.pack("<HH2sBH", 2, 0x4541, b"AE", 3, DEFLATED)[:7]
    return struct.pack("<HH", 0x9901, len(body)) + body


def _tamper(data: bytes, old: bytes, new: bytes, count: int = 1) -> bytes:
    assert data.count(old) >= count, (old, data.count(old))
    return data.replace(old, new, count)


def _flip_stored_byte(p, c) -> bytes:
    data = pkg(p, c, Item("assets/level.dat", b"LEVEL-DATA-" * 200, method=STORED))
    at = data.index(b"LEVEL-DATA-") + 5
    return data[:at] + b"X" + data[at + 1:]


def _deflated_wrong_crc(p, c) -> bytes:
    body = text(20_000)
    return pkg(p, c, Item("app/big.js", body, crc=crc(body) ^ 0x1))


def _local_sizes_differ(p, c) -> bytes:
    body = text(5000)
    return pkg(p, c, Item("app/x.js", body, local={"csize": len(deflate(body)) - 7}))


def _zip64_records(p, c, how: str) -> bytes:
    return pkg(p, c, zip64_end=how)


def _python_zip64(p, c) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps(manifest(p, c)))
        with z.open("assets/big.bin", "w", force_zip64=True) as f:
            f.write(text(100_000))
    return buf.getvalue()


class _Unseekable(io.RawIOBase):
    def __init__(self):
        self.buf = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.buf += b
        return len(b)


def _descriptors(p, c) -> bytes:
    """Written to a pipe, zipfile uses data descriptors (stored and deflated)."""
    sink = _Unseekable()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps(manifest(p, c)))
        z.writestr("app/main.js", text(30_000))
        z.writestr(zipfile.ZipInfo("assets/raw.bin"), noise(5000), compress_type=zipfile.ZIP_STORED)
    data = bytes(sink.buf)
    assert struct.unpack_from("<H", data, 6)[0] & 0x08  # really has descriptors
    return data


def _nested_with_descriptors(p, c) -> bytes:
    """A nested archive written to a pipe: its deflated entries end where their
    DEFLATE streams end, which falls inside a large piece of the outer stream."""
    sink = _Unseekable()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("big.bin", noise(300_000) + text(100_000))
        z.writestr("after.bin", noise(400_000, 3))
    return pkg(p, c, Item("assets/levels.zip", bytes(sink.buf), method=STORED))


def _no_utf8_flag_names(p, c) -> bytes:
    return pkg(p, c, Item("docs/résumé.txt".encode("utf-8"), b"cv", flags=0))


def _many_entries(n: int):
    def build(p, c):
        return raw_zip([manifest_item(p, c)] + [Item(f"r/{i}", b"", method=STORED) for i in range(n)])
    return build


def _declared_other_sha(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data + b"!").hexdigest()


def cases() -> list[Case]:
    big_zeros = 24 * MiB
    return [
        # ---- valid edge cases: these must pass --------------------------------------
        Case("valid_deflated", None, lambda p, c: pkg(p, c)),
        Case("valid_stored_entries", None, lambda p, c: zip_bytes(
            {"manifest.json": json.dumps(manifest(p, c)), "assets/a.bin": noise(4000)},
            compression=zipfile.ZIP_STORED)),
        Case("valid_zip64_entries", None, _python_zip64),
        Case("valid_zip64_end_records", None, lambda p, c: _zip64_records(p, c, "maxed")),
        Case("valid_zip64_end_records_exact", None, lambda p, c: _zip64_records(p, c, "exact")),
        Case("valid_deep_directories", None, lambda p, c: pkg(
            p, c, Item("/".join(f"d{i}" for i in range(60)) + "/leaf.txt", b"deep"))),
        Case("valid_unicode_names", None, lambda p, c: pkg(
            p, c, Item("資料/日本語.txt", "こんにちは".encode()), Item("émoji-😀.png", noise(100)),
            Item("Ελληνικά/straße.txt", b"ss"))),
        Case("valid_manifest_extra_keys", None, lambda p, c: raw_zip([manifest_item(
            p, c, x_build={"commit": "abc123", "ci": True}, screens=[1, 2], description="Notes")])),
        Case("valid_data_descriptors", None, _descriptors),
        Case("valid_directories_and_empty_files", None, lambda p, c: pkg(
            p, c, Item("assets/", b"", method=STORED, mode=0o040755),
            Item("assets/empty.txt", b""), Item("assets/sounds/", b"", method=STORED, mode=0o040755))),
        Case("valid_archive_comment", None, lambda p, c: pkg(p, c, comment=b"built by mosis-pack 1.0")),
        Case("valid_unicode_path_field", None, lambda p, c: pkg(p, c, Item(
            "docs/r\x82sum\x82.txt".encode("latin-1"), b"cv", flags=0,
            cd_extra=_unicode_path_field("docs/résumé.txt", "docs/r\x82sum\x82.txt".encode("latin-1"))))),
        Case("valid_utf8_names_without_flag", None, _no_utf8_flag_names),
        Case("valid_nested_archive", None, lambda p, c: pkg(p, c, Item(
            "assets/levels.zip", zip_bytes({"l1.json": text(20_000), "l2.json": text(20_000, 3)})))),
        Case("valid_nested_archive_with_descriptors", None, _nested_with_descriptors),
        Case("valid_nested_archive_after_a_stub", None, lambda p, c: pkg(p, c, Item(
            "tools/setup.exe", raw_zip([Item("readme.txt", text(5000))], prefix=b"MZ" + noise(2000))))),
        Case("valid_signature_bytes_in_data", None, lambda p, c: pkg(p, c, Item(
            "assets/blob.bin", noise(500) + b"PK\x03\x04" + b"\xff" * 40 + noise(500)))),
        Case("valid_zero_padded_local_extra", None, lambda p, c: pkg(  # as zipalign pads
            p, c, Item("lib/native.so", noise(3000), method=STORED, local_extra=bytes(11)))),
        Case("valid_no_unix_modes", None, lambda p, c: raw_zip(
            [dataclasses.replace(manifest_item(p, c), made_by=DOS, mode=None),
             Item("a.txt", b"hi", made_by=DOS, mode=None)])),

        # ---- zip bombs ----------------------------------------------------------------
        Case("bomb_single_entry", "compression_ratio", lambda p, c: pkg(
            p, c, zeros_entry("assets/huge.bin", big_zeros)), "looks like a zip bomb"),
        Case("bomb_many_small_entries", "compression_ratio", lambda p, c: raw_zip(
            [manifest_item(p, c)] + [zeros_entry(f"assets/z{i}.bin", 32 * 1024) for i in range(1200)]),
             "the package unpacks to"),
        Case("bomb_understated_size", "invalid_zip", lambda p, c: pkg(
            p, c, Item("assets/small.bin", bytes(10 * MiB), size=1024, crc=crc(bytes(1024)))),
             "unpacks to more than its declared 1024 bytes"),
        Case("bomb_nested_recursive", "compression_ratio", lambda p, c: pkg(p, c, Item(
            "assets/data.zip", nested(3, 8, {f"z{i}": bytes(MiB) for i in range(8)}))),
             "nested zip bomb"),
        Case("bomb_nested_single_layer", "compression_ratio", lambda p, c: pkg(p, c, Item(
            "assets/inner.zip", zip_bytes({"huge.bin": bytes(big_zeros)}), method=STORED)),
             "nested"),
        Case("bomb_nested_too_deep", "compression_ratio", lambda p, c: pkg(p, c, Item(
            "assets/deep.zip", nested(5, 1, {"x.txt": b"x"}))), "levels deep"),
        # Archives a zip reader opens through their central directory, whose
        # entries do not follow one another from the first byte.
        Case("bomb_nested_junk_prefix", "compression_ratio", lambda p, c: pkg(p, c, Item(
            "lib/inner.jar", b"JUNK" + zip_bytes({"huge.bin": bytes(big_zeros)}))), "zip bomb"),
        Case("bomb_nested_gap", "compression_ratio", lambda p, c: pkg(p, c, Item(
            "lib/inner.jar", raw_zip([Item("a.txt", b"small"),
                                      Item("huge.bin", bytes(big_zeros), before=b"GAP!")]))), "zip bomb"),
        Case("bomb_nested_sfx_stub", "compression_ratio", lambda p, c: pkg(p, c, Item(
            "tools/setup.exe", raw_zip([Item("huge.bin", bytes(big_zeros))],
                                       prefix=b"MZ\x90\x00" + noise(3000), prefix_in_offsets=True))),
             "zip bomb"),
        Case("bomb_nested_too_deep_prefixed", "compression_ratio", lambda p, c: pkg(p, c, Item(
            "assets/deep.zip", _prefixed_levels(5))), "levels deep"),
        Case("bomb_nested_hidden_in_unknown_method", "compression_ratio", lambda p, c: pkg(p, c, Item(
            "lib/inner.jar", raw_zip([Item("x.bz2", b"", method=12, packed=zip_bytes(
                {"huge.bin": bytes(big_zeros)}), size=10)]))), "zip bomb"),
        Case("bomb_quoted_overlap", "invalid_zip", quoted_overlap, "overlap"),
        Case("bomb_full_overlap", "invalid_zip", lambda p, c: pkg(
            p, c, *[Item(f"copy{i}.bin", bytes(1000), offset=0) for i in range(1, 4)]), "overlap"),

        # ---- unsafe paths ---------------------------------------------------------------
        _path_case("path_dotdot", "../evil.sh", "path component '..'"),
        _path_case("path_dotdot_inside", "assets/../../evil.sh", "path component '..'"),
        _path_case("path_absolute", "/etc/cron.d/evil", "absolute path"),
        _path_case("path_backslash", "..\\..\\evil.bat", "backslash"),
        _path_case("path_drive_letter", "C:/Windows/evil.dll", "drive letter"),
        _path_case("path_drive_relative", "C:evil.dll", "drive letter"),
        _path_case("path_nul_byte", b"evil.sh\x00.png", "control character"),
        _path_case("path_fullwidth_solidus", "..\uff0f..\uff0fevil.sh", "Unicode-normalised"),
        _path_case("path_two_dot_leader", "\u2025/evil.sh", "Unicode-normalised"),
        _path_case("path_fullwidth_full_stop", "\uff0e\uff0e/evil.sh", "Unicode-normalised"),
        _path_case("path_fullwidth_reverse_solidus", "..\uff3cevil.sh", "backslash"),
        _path_case("path_division_slash", "..\u2215evil.sh", "looks like a slash"),
        _path_case("path_bidi_override", "evil\u202ehs.png", "invisible"),
        _path_case("path_overlong_utf8", b"\xc0\xae\xc0\xae/evil.sh", "not valid UTF-8", flags=UTF8),
        _path_case("path_utf8_without_flag", "..\uff0fevil.sh".encode("utf-8"), "Unicode-normalised",
                   flags=0),
        _path_case("path_unicode_path_field", "safe.txt", "path component '..'",
                   cd_extra=_unicode_path_field("../evil.sh", b"safe.txt")),
        _path_case("path_dot_component", "assets/./x/../../evil.sh", "path component '.'"),
        _path_case("path_dots_only", ".../evil.sh", "path component '...'"),
        _path_case("path_empty_component", "assets//evil.sh", "empty path component"),
        _path_case("path_too_long_component", "a" * 300, "longer than 255 bytes"),
        Case("special_device_file", "unsafe_path", lambda p, c: pkg(
            p, c, Item("dev/tty", b"", method=STORED, mode=0o020666)), "special file"),

        # ---- symbolic links -------------------------------------------------------------
        Case("symlink_unix_mode", "symlink", lambda p, c: pkg(
            p, c, Item("assets/passwd", b"/etc/passwd", method=STORED, mode=0o120777)),
             "symbolic link"),
        Case("symlink_dos_host_with_mode", "symlink", lambda p, c: pkg(
            p, c, Item("assets/link", b"../../..", method=STORED, made_by=DOS, mode=0o120777)),
             "symbolic link"),
        Case("symlink_in_extra_field", "symlink", lambda p, c: pkg(
            p, c, Item("assets/link2", b"", method=STORED, cd_extra=_asi_symlink(b"/etc/shadow"))),
             "symbolic link"),

        # ---- duplicates ---------------------------------------------------------------------
        Case("duplicate_exact", "duplicate_entry", lambda p, c: pkg(
            p, c, Item("assets/a.txt", b"one"), Item("assets/a.txt", b"two")), "appears twice"),
        Case("duplicate_manifest", "duplicate_entry", lambda p, c: pkg(
            p, c, manifest_item(p, c, name="Other")), "'manifest.json' appears twice"),
        Case("duplicate_case_folded", "duplicate_entry", lambda p, c: pkg(
            p, c, Item("Assets/Logo.PNG", b"one"), Item("assets/logo.png", b"two")), "case"),
        Case("duplicate_unicode_forms", "duplicate_entry", lambda p, c: pkg(
            p, c, Item(unicodedata.normalize("NFC", "café.txt"), b"1"),
            Item(unicodedata.normalize("NFD", "café.txt"), b"2")), "Unicode form"),
        Case("duplicate_file_and_directory", "duplicate_entry", lambda p, c: pkg(
            p, c, Item("lib", b"file"), Item("lib/x.so", b"elf")), "both a file and a directory"),

        # ---- local headers that disagree with the central directory ---------------------------
        Case("local_name_differs", "invalid_zip", lambda p, c: pkg(
            p, c, Item("assets/readme.txt", b"hello", local_name=b"../../../evil.txt")),
             "the local header names"),
        Case("local_sizes_differ", "invalid_zip", _local_sizes_differ, "sizes or CRC-32"),
        Case("local_method_differs", "invalid_zip", lambda p, c: pkg(
            p, c, Item("assets/b.txt", b"plain", method=STORED, local={"method": DEFLATED})),
             "method or flags"),

        # ---- encryption ------------------------------------------------------------------------
        Case("encrypted_zipcrypto", "encrypted_entry", lambda p, c: pkg(
            p, c, Item("secret.bin", noise(100), method=STORED, flags=0x1)), "encrypted"),
        Case("encrypted_aes", "encrypted_entry", lambda p, c: pkg(
            p, c, Item("secret.bin", noise(100), method=99, packed=noise(128),
                       cd_extra=_aes_extra(), local_extra=_aes_extra())), "encrypted"),
        Case("encrypted_strong_central_directory", "encrypted_entry", lambda p, c: pkg(
            p, c, Item("secret.bin", noise(100), method=STORED, flags=0x1 | 0x40 | 0x2000)),
             "encrypted"),

        # ---- damaged data ---------------------------------------------------------------------
        Case("crc_mismatch_stored", "crc_mismatch", _flip_stored_byte, "CRC-32 of 'assets/level.dat'"),
        Case("crc_mismatch_deflated", "crc_mismatch", _deflated_wrong_crc, "CRC-32 of 'app/big.js'"),
        Case("deflate_stream_damaged", "invalid_zip", lambda p, c: pkg(
            p, c, Item("app/broken.js", text(4000), packed=b"\xff" * 64)), "damaged"),
        Case("unsupported_method_bzip2", "invalid_zip", lambda p, c: zip_bytes(
            {"manifest.json": json.dumps(manifest(p, c)), "a.txt": text(1000)},
            compression=zipfile.ZIP_BZIP2), "compression method 12"),

        # ---- not an archive, or not only one ---------------------------------------------------
        Case("truncated_half", "invalid_zip", lambda p, c: pkg(p, c)[:len(pkg(p, c)) // 2],
             "truncated"),
        Case("truncated_end_record", "invalid_zip", lambda p, c: pkg(p, c)[:-10], "truncated"),
        Case("truncated_central_directory", "invalid_zip", lambda p, c: _cut_central(pkg(p, c)),
             "central directory"),
        Case("empty_archive", "invalid_zip", lambda p, c: zip_bytes({}), "empty"),
        Case("empty_file", "invalid_zip", lambda p, c: b"", "too short", via_api=False),
        Case("not_a_zip", "invalid_zip", lambda p, c: b"\x89PNG\r\n\x1a\n" + noise(5000),
             "not a ZIP archive"),
        Case("junk_prepended", "invalid_zip", lambda p, c: pkg(p, c, prefix=b"MZ" + noise(2000)),
             "bytes were added before"),
        Case("junk_prepended_offsets_adjusted", "invalid_zip", lambda p, c: pkg(
            p, c, prefix=b"#!/bin/sh\nexec unzip \"$0\"\n", prefix_in_offsets=True),
             "does not start with its first entry"),
        Case("data_after_end_record", "invalid_zip", lambda p, c: pkg(p, c, suffix=b"TRAILER" * 10),
             "bytes after the end"),
        Case("hidden_data_between_entries", "invalid_zip", lambda p, c: pkg(
            p, c, Item("assets/c.txt", b"c", before=b"HIDDEN" * 50)), "unexpected bytes before"),
        Case("comment_hides_end_record", "invalid_zip", lambda p, c: pkg(
            p, c, comment=b"PK\x05\x06" + bytes(18)), "comment"),
        Case("multi_volume", "invalid_zip", lambda p, c: pkg(p, c, eocd={"disk": 1, "cd_disk": 1}),
             "multi-volume"),
        Case("entry_count_lies", "invalid_zip", lambda p, c: pkg(p, c, eocd={"n_disk": 5, "n_total": 5}),
             "central directory"),

        # ---- the manifest -------------------------------------------------------------------------
        Case("manifest_missing", "manifest_missing", lambda p, c: zip_bytes(dict(APP_FILES)),
             "no manifest.json"),
        Case("manifest_not_at_root", "manifest_missing", lambda p, c: zip_bytes(
            {"app/manifest.json": json.dumps(manifest(p, c)), **dict(APP_FILES)}), "not at the root"),
        Case("manifest_wrong_case", "manifest_missing", lambda p, c: zip_bytes(
            {"Manifest.json": json.dumps(manifest(p, c))}), "wrong case"),
        Case("manifest_is_directory", "manifest_missing", lambda p, c: raw_zip(
            [Item("manifest.json/", b"", method=STORED, mode=0o040755), *[Item(n, d) for n, d in APP_FILES]]),
             "not a file"),
        _manifest_case("manifest_not_utf8", "not UTF-8",
                       raw=RAW_HEAD + b'"name": "Caf\xe9"}'),
        _manifest_case("manifest_with_bom", "byte-order mark",
                       raw=b'\xef\xbb\xbf{"package_id": "$PID", "version_code": $CODE, '
                           b'"version_name": "1", "name": "A"}'),
        _manifest_case("manifest_invalid_json", "not valid JSON",
                       raw=b'{"package_id": "$PID", "version_code": $CODE,'),
        _manifest_case("manifest_over_64k", "the limit is 65536",
                       description="x" * 70_000),
        _manifest_case("manifest_not_an_object", "must be a JSON object", raw=b'["$PID", $CODE]'),
        _manifest_case("manifest_missing_name", "'name' is missing", name=DROP),
        _manifest_case("manifest_missing_version_code", "'version_code' is missing", version_code=DROP),
        _manifest_case("manifest_version_code_string", "version_code '", version_code="7"),
        _manifest_case("manifest_version_code_zero", "from 1 to 2147483647", version_code=0),
        _manifest_case("manifest_version_code_too_big", "from 1 to 2147483647", version_code=2**31),
        _manifest_case("manifest_version_code_bool", "version_code True", version_code=True),
        _manifest_case("manifest_version_code_float", "version_code 7.0", version_code=7.0),
        _manifest_case("manifest_permissions_not_list", "permissions", permissions="network"),
        _manifest_case("manifest_name_too_long", "name must be a string of 1 to 80", name="n" * 81),
        _manifest_case("manifest_name_control_chars", "control characters", name="Evil\u0000App"),
        _manifest_case("manifest_bad_package_id", "must look like com.example.app",
                       package_id="Com.Example..App"),
        _manifest_case("manifest_nan", "NaN",
                       raw=RAW_HEAD + b'"name": "A", "rating": NaN}'),
        _manifest_case("manifest_duplicate_key", "twice",
                       raw=RAW_HEAD + b'"name": "A", "name": "B"}'),
        _manifest_case("manifest_huge_number", "cannot be read",
                       raw=RAW_HEAD + b'"name": "A", "n": ' + b"9" * 5000 + b"}"),
        _manifest_case("manifest_deep_nesting", "cannot be read",
                       raw=RAW_HEAD + b'"name": "A", "n": ' + b"[" * 30000 + b"]" * 30000 + b"}"),
        _swap_case("package_id_of_another_app", "package_id_mismatch", "this app is",
                   package_id="com.someone.else"),
        _swap_case("version_code_not_declared", "version_code_mismatch", "declared as version",
                   version_code=424242),

        # ---- limits --------------------------------------------------------------------------------
        Case("too_many_entries", "too_many_entries", _many_entries(10_000), "the limit is 10000"),
        Case("too_large_unpacked", "too_large_unpacked", lambda p, c: pkg(
            p, c, Item("assets/book.txt", text(6 * MiB))), "the limit is 4194304",
             limits={"max_unpacked_bytes": 4 * MiB}),
        Case("too_large", "too_large", lambda p, c: pkg(p, c, Item("assets/movie.bin", noise(100_000))),
             "the limit is 65536", limits={"max_package_bytes": 64 * 1024}),
        Case("declared_size_differs", "size_mismatch", lambda p, c: pkg(p, c),
             "were declared", declare_size=lambda data: len(data) + 1),
        Case("declared_sha256_differs", "sha256_mismatch", lambda p, c: pkg(p, c),
             "was declared", declare_sha256=_declared_other_sha),
    ]


def _cut_central(data: bytes) -> bytes:
    """Keep the end record but drop the central directory's last 10 bytes."""
    eocd = data.rindex(b"PK\x05\x06")
    return data[:eocd - 10] + data[eocd:]


CASES = cases()
HOSTILE = [c for c in CASES if c.code]
VALID = [c for c in CASES if not c.code]
