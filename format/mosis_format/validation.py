"""Validation of `.mosis` packages (ZIP archives) read straight from storage.

The validator trusts nothing in the archive and never writes it anywhere:
no temporary file, no extracted entry. It works in two steps, so memory stays
bounded whatever the package size (see docs/validation.md):

1. the end of the object (end records and central directory, fetched with
   ranged reads) is parsed and every entry is checked: names, types,
   encryption, duplicates, layout, counts, sizes and compression ratios, and
   that `manifest.json` is at the root. Most hostile packages stop here,
   before their data is inflated;
2. the whole object is then read once, front to back, by a read-ahead thread
   that hashes it (sha256) while this thread compares each local header with
   its central-directory twin and inflates each entry to check its real size
   and CRC-32. Archives nested inside the package are walked as they inflate
   and count towards the limits, since a zip bomb can hide in them. The
   manifest is the only entry kept, and it is at most 64 KiB.

Every failure is a `PackageInvalid` with a reason code from the design
contract and a message that tells the developer what to fix.
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import struct
import threading
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Iterator

from mosis_format.zipreader import (
    DEFLATED, ENCRYPTION_FLAGS, FLAG_DESCRIPTOR, LOCAL_SIG, LOCAL_SIZE, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG,
    STORED, ByteStream, Entry, PackageInvalid, RangeReader, invalid, read_central_directory,
    read_descriptor, read_local_header, unpack,
)

MiB = 1024 * 1024


@dataclass(frozen=True)
class PackageLimits:
    """What a `.mosis` archive may contain; see docs/validation.md. A server
    sets them from its own settings; these are the defaults."""

    max_package_bytes: int = 512 * MiB
    max_entries: int = 10_000
    max_unpacked_bytes: int = 2048 * MiB
    # An entry whose unpacked size is above the floor and whose ratio is above
    # the maximum is refused as a likely zip bomb (Warehouse's rule, tightened).
    max_compression_ratio: float = 50.0
    compression_ratio_floor: int = 16 * MiB
    max_manifest_bytes: int = 64 * 1024  # fixed by the package format
    # Archives inside the package are inflated as they stream by and count
    # towards the limits above; deeper nesting is refused.
    max_nested_depth: int = 3


__all__ = ["Expected", "PackageInvalid", "PackageLimits", "Report", "STREAM_CHUNK", "validate_package",
           "check_name", "parse_manifest"]

MANIFEST_NAME = "manifest.json"
PACKAGE_ID_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
MAX_VERSION_CODE = 2**31 - 1
MAX_NAME_BYTES, MAX_COMPONENT_BYTES = 4096, 255  # PATH_MAX and NAME_MAX of common filesystems
# Characters that look like a path separator to a person but are not one.
SEPARATOR_LOOKALIKES = set("\u2044\u2215\u2216\u2571\u2572\u29f5\u29f8\u29f9\u3033")
# Reads from storage: large reads cost less CPU per byte (fewer hand-overs
# between the reading and the inflating thread), small ones let inflating
# start and finish sooner (it waits for the first read, and the last reads
# queue behind it); READ_AHEAD_CHUNKS of them may wait, which bounds the
# memory the read-ahead uses (16 MiB).
STREAM_CHUNK = 2 * 1024 * 1024
READ_AHEAD_CHUNKS = 8
# Archives nested in the package may hold at most this many entries in all,
# per entry the package may hold: walking them costs time per entry.
NESTED_ENTRIES_PER_ENTRY = 10


@dataclass
class Expected:
    """What the upload must match: the app and the version it was declared as."""

    package_id: str
    version_code: int
    size: int | None = None
    sha256: str | None = None


@dataclass
class Report:
    size: int
    sha256: str
    manifest: dict
    manifest_bytes: bytes
    entries: int
    unpacked_size: int


def validate_package(size: int, read_range: RangeReader, stream: Iterable[bytes],
                     expected: Expected, limits: PackageLimits) -> Report:
    """Validate a package of `size` bytes; raise PackageInvalid on any fault.

    `read_range(offset, length)` returns bytes of the object; `stream` yields
    all of its bytes in order (it is closed, read or not, before returning).
    """
    try:
        if size > limits.max_package_bytes:
            raise PackageInvalid("too_large", f"the package is {size} bytes; the limit is "
                                 f"{limits.max_package_bytes} bytes")
        if expected.size is not None and size != expected.size:
            raise PackageInvalid("size_mismatch", f"the upload is {size} bytes but "
                                 f"{expected.size} were declared; upload the exact file you "
                                 "declared")
        hasher = hashlib.sha256()
        # The read-ahead starts at once: the first chunks arrive while the
        # central directory is checked (at most READ_AHEAD_CHUNKS are wasted
        # on a package refused there).
        with _ReadAhead(stream, hasher) as chunks:
            directory = read_central_directory(size, read_range, limits.max_entries)
            manifest_entry = check_entries(directory.entries, directory.offset, size, limits)
            budget = _Budget(size, sum(e.size for e in directory.entries), limits)
            manifest_bytes = _read_entries(ByteStream(chunks), directory.entries, directory.offset,
                                           size, manifest_entry, budget, limits)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    digest = hasher.hexdigest()
    if expected.sha256 and digest != expected.sha256.lower():
        raise PackageInvalid("sha256_mismatch", f"the upload's sha256 is {digest} but "
                             f"{expected.sha256} was declared; upload the exact file you declared")
    manifest = parse_manifest(manifest_bytes, limits)
    check_manifest_matches(manifest, expected)
    return Report(size=size, sha256=digest, manifest=manifest, manifest_bytes=manifest_bytes,
                  entries=len(directory.entries), unpacked_size=budget.declared)


# -- step 1: the central directory ----------------------------------------------

def check_name(name: str) -> None:
    """Refuse any name that could escape the directory it is unpacked into."""
    problem = _name_problem(name)
    if problem is None:
        # Look again after Unicode compatibility folding, which turns e.g.
        # FULLWIDTH SOLIDUS into "/" and TWO DOT LEADER into "..".
        folded = unicodedata.normalize("NFKC", name)
        if folded != name:
            problem = _name_problem(folded)
            if problem:
                problem += " once Unicode-normalised"
    if problem:
        raise PackageInvalid("unsafe_path", f"unsafe entry name {name!r}: {problem}; entries must "
                             "be relative paths of plain names inside the package")


def _name_problem(name: str) -> str | None:
    if not name or name == "/":
        return "the name is empty"
    if "\\" in name:
        return "it contains a backslash"
    if name.startswith("/"):
        return "it is an absolute path"
    if re.match(r"^[A-Za-z]:", name):
        return "it starts with a drive letter"
    if any(unicodedata.category(c) == "Cc" for c in name):
        return "it contains a control character"
    if any(unicodedata.category(c) in ("Cf", "Zl", "Zp") for c in name):
        return "it contains an invisible formatting character"
    if any(c in SEPARATOR_LOOKALIKES for c in name):
        return "it contains a character that looks like a slash"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"it is longer than {MAX_NAME_BYTES} bytes"
    for part in name[:-1].split("/") if name.endswith("/") else name.split("/"):
        if part == "":
            return "it contains an empty path component"
        if part.strip(". ") == "":
            return f"it contains the path component {part!r}"
        if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
            return f"a path component is longer than {MAX_COMPONENT_BYTES} bytes"
    return None


def _fold(name: str) -> str:
    """The form under which two names land on the same file somewhere."""
    return unicodedata.normalize("NFKC", name.rstrip("/")).casefold()


def _path_digests(key: str) -> Iterator[bytes]:
    """A digest of each path prefix of `key`, the whole key last.

    Digests (not strings) keep the memory per entry constant however deep or
    long its name, and each prefix costs only its last component to hash.
    """
    h = hashlib.blake2b(digest_size=16)
    for part in key.split("/"):
        h.update(part.encode("utf-8", "surrogatepass") + b"/")
        yield h.copy().digest()


def _keys(e: Entry) -> set[str]:
    return {_fold(n) for n in (e.name, *e.other_names)}


def check_entries(entries: list[Entry], cd_offset: int, size: int,
                  limits: PackageLimits) -> Entry:
    """Check every entry; return the manifest's."""
    seen: dict[bytes, str] = {}
    files: set[bytes] = set()
    manifest = None
    for e in entries:
        for name in (e.name, *e.other_names):
            check_name(name)
        kind = e.mode & S_IFMT
        if kind == S_IFLNK or e.symlink_in_extra:
            raise PackageInvalid("symlink", f"{e.name!r} is a symbolic link; packages may hold "
                                 "only regular files and directories")
        if kind not in (0, S_IFREG, S_IFDIR):
            raise PackageInvalid("unsafe_path", f"{e.name!r} is a device, pipe or other special "
                                 "file; packages may hold only regular files and directories")
        for key in _keys(e):
            *_, digest = _path_digests(key)
            if digest in seen:
                raise PackageInvalid("duplicate_entry", f"{e.name!r} appears twice (or differs "
                                     f"from {seen[digest]!r} only by case or Unicode form); every "
                                     "path must be unique")
            seen[digest] = e.name
            if not e.is_dir:
                files.add(digest)
        if e.encrypted:
            raise PackageInvalid("encrypted_entry", f"{e.name!r} is encrypted; packages must not "
                                 "be password-protected")
        if e.method not in (STORED, DEFLATED):
            raise invalid(f"{e.name!r} uses compression method {e.method}; only stored and "
                          "deflate are accepted (the zip tool's defaults)")
        if e.is_dir and (e.size or e.compressed_size > 2):
            raise invalid(f"directory entry {e.name!r} has content")
        if e.method == STORED and e.size != e.compressed_size:
            raise invalid(f"stored entry {e.name!r} has different packed and unpacked sizes")
        if e.name == MANIFEST_NAME:
            manifest = e
    for e in entries:  # a file must not also be a directory of another entry
        for key in _keys(e):
            *parents, _ = _path_digests(key)
            clash = next((d for d in parents if d in files), None)
            if clash is not None:
                raise PackageInvalid("duplicate_entry", f"{e.name!r} lies under "
                                     f"{seen[clash]!r}, which is a file: a path cannot be both a "
                                     "file and a directory")
    if manifest is None:
        raise _manifest_missing(entries)
    if manifest.size > limits.max_manifest_bytes:
        raise PackageInvalid("manifest_invalid", f"{MANIFEST_NAME} is {manifest.size} bytes; the "
                             f"limit is {limits.max_manifest_bytes} bytes")
    _check_layout(entries, cd_offset)
    _check_sizes(entries, size, limits)
    return manifest


def _check_layout(entries: list[Entry], cd_offset: int) -> None:
    # Entries must lie one after another, each alone in its span of the file:
    # overlapping entries are how non-recursive ("quoted overlap") zip bombs
    # multiply their data, and gaps are where hidden content goes.
    by_offset = sorted(entries, key=lambda e: e.offset)
    if by_offset[0].offset != 0:
        raise invalid("the archive does not start with its first entry (bytes were added before "
                      "it); upload the .mosis file exactly as it was built")
    for a, b in zip(by_offset, by_offset[1:]):
        if b.offset < a.data_end_min:
            raise invalid(f"entries {a.name!r} and {b.name!r} overlap in the file, a zip bomb "
                          "technique; build the package with a standard zip tool")
    last = by_offset[-1]
    if last.data_end_min > cd_offset:
        raise invalid(f"entry {last.name!r} runs into the central directory")


def _check_sizes(entries: list[Entry], size: int, limits: PackageLimits) -> None:
    ratio, floor = limits.max_compression_ratio, limits.compression_ratio_floor
    for e in entries:
        if e.size > floor and e.size > ratio * max(e.compressed_size, 1):
            raise PackageInvalid("compression_ratio", f"{e.name!r} unpacks to {e.size} bytes "
                                 f"from {e.compressed_size} (a ratio over {ratio:g}), which looks "
                                 "like a zip bomb; store such data in a less compressible form or "
                                 "generate it on the device")
    total = sum(e.size for e in entries)
    if total > floor and total > ratio * size:
        raise PackageInvalid("compression_ratio", f"the package unpacks to {total} bytes from "
                             f"{size} (a ratio over {ratio:g}), which looks like a zip bomb")
    if total > limits.max_unpacked_bytes:
        raise PackageInvalid("too_large_unpacked", f"the package unpacks to {total} bytes; the "
                             f"limit is {limits.max_unpacked_bytes} bytes")


def _manifest_missing(entries: list[Entry]) -> PackageInvalid:
    for e in entries:
        base = e.name.rstrip("/").rsplit("/", 1)[-1]
        if base.lower() == MANIFEST_NAME and e.name != MANIFEST_NAME:
            where = "not a file" if e.is_dir else ("named in the wrong case" if "/" not in
                                                   e.name.rstrip("/") else "not at the root")
            return PackageInvalid("manifest_missing", f"{MANIFEST_NAME} must be a file at the "
                                  f"archive root; found {e.name!r} ({where})")
    return PackageInvalid("manifest_missing", f"the archive has no {MANIFEST_NAME} at its root; "
                          "add one (see docs/validation.md)")


# -- step 2: one pass over the bytes -------------------------------------------------

class _ReadAhead:
    """Pull the object's chunks on a thread of its own, hashing them there.

    hashlib and inflating both release the GIL on large buffers, so reading
    and hashing overlap with inflating. At most READ_AHEAD_CHUNKS wait.
    """

    _END = object()

    def __init__(self, chunks: Iterable[bytes], hasher):
        self._chunks = chunks
        self._hasher = hasher
        self._queue: queue.Queue = queue.Queue(READ_AHEAD_CHUNKS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="package-read-ahead", daemon=True)

    def __enter__(self) -> Iterator[bytes]:
        self._thread.start()
        return self._consume()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:  # make room, so a reader waiting to hand over a chunk sees the stop
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(0.01)

    def _run(self) -> None:
        try:
            for chunk in self._chunks:
                self._hasher.update(chunk)
                if not self._put(chunk):
                    return
            self._put(self._END)
        except BaseException as e:  # handed to the validating thread
            self._put(e)

    def _put(self, item) -> bool:
        while not self._stop.is_set():  # the timeout only bounds how late a stop is seen
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _consume(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class _Budget:
    """What the package unpacks to, counting archives nested inside it."""

    def __init__(self, size: int, declared: int, limits: PackageLimits):
        self.size = size
        self.declared = declared
        self.total = declared
        self.limits = limits
        self.nested_entries = 0
        self.max_nested_entries = NESTED_ENTRIES_PER_ENTRY * limits.max_entries

    def add(self, n: int, what: str) -> None:
        self.total += n
        ratio = self.limits.max_compression_ratio
        if self.total > self.limits.compression_ratio_floor and self.total > ratio * self.size:
            raise PackageInvalid("compression_ratio", f"with the archives nested inside it "
                                 f"({what}), the package unpacks to more than {self.total} bytes "
                                 f"from {self.size} (a ratio over {ratio:g}): a nested zip bomb")
        if self.total > self.limits.max_unpacked_bytes:
            raise PackageInvalid("too_large_unpacked", f"with the archives nested inside it "
                                 f"({what}), the package unpacks to more than "
                                 f"{self.limits.max_unpacked_bytes} bytes, the limit")

    def count_entry(self, what: str) -> None:
        self.nested_entries += 1
        if self.nested_entries > self.max_nested_entries:
            raise PackageInvalid("too_many_entries", f"the archives nested in the package ({what}) "
                                 f"hold more than {self.max_nested_entries} entries in all")


def _read_entries(stream: ByteStream, entries: list[Entry], cd_offset: int, size: int,
                  manifest_entry: Entry, budget: _Budget, limits: PackageLimits) -> bytes:
    manifest = b""
    for e in sorted(entries, key=lambda e: e.offset):
        if stream.pos != e.offset:
            raise invalid(f"there are unexpected bytes before entry {e.name!r}")
        local = read_local_header(stream)
        _check_local_header(local, e)
        data = unpack(e.method, stream.pieces(e.compressed_size), e.size, repr(e.name), e.crc)
        if e is manifest_entry:
            manifest = b"".join(data)
        else:
            _inspect(e.name, data, budget, 1)
        if e.flags & FLAG_DESCRIPTOR:
            read_descriptor(stream, local.zip64, (e.crc, e.compressed_size, e.size))
    if stream.pos != cd_offset:
        raise invalid("there are unexpected bytes between the last entry and the central "
                      "directory")
    stream.drain()  # the central directory and end records, through the hash
    if stream.pos != size:
        raise invalid(f"read {stream.pos} bytes but the object has {size}; upload it again")
    return manifest


def _check_local_header(local, e: Entry) -> None:
    # Streaming extractors believe the local header, others the central
    # directory: the two must say the same, or one archive is two packages.
    if local.raw_name != e.raw_name:
        raise invalid(f"the local header names {local.raw_name!r} but the central directory "
                      f"names {e.raw_name!r}")
    if (local.method != e.method
            or (local.flags ^ e.flags) & (ENCRYPTION_FLAGS | FLAG_DESCRIPTOR)):
        raise invalid(f"the local header of {e.name!r} disagrees with the central directory "
                      "(method or flags)")
    described = (local.crc, local.compressed_size, local.size)
    if described != (e.crc, e.compressed_size, e.size) and not (
            e.flags & FLAG_DESCRIPTOR and described == (0, 0, 0)):
        raise invalid(f"the local header of {e.name!r} disagrees with the central directory "
                      "(sizes or CRC-32)")


# What a local header's fields hold in archives zip tools write; anything
# else after the signature is data that merely contains its four bytes.
KNOWN_METHODS = {STORED, 1, 2, 3, 4, 5, 6, DEFLATED, 9, 12, 14, 93, 95, 96, 97, 98, 99}
UNUSED_FLAGS = 0xD780  # bits 7-10, 12, 14 and 15: unused or reserved by the format
MAX_VERSION_NEEDED = 99


def _looks_like_local_header(head: bytes) -> bool:
    if len(head) < LOCAL_SIZE:
        return False
    version, flags, method = struct.unpack_from("<HHH", head, 4)
    name_len = struct.unpack_from("<H", head, 26)[0]
    return (version <= MAX_VERSION_NEEDED and not flags & UNUSED_FLAGS and method in KNOWN_METHODS
            and 0 < name_len <= MAX_NAME_BYTES)


def _inspect(name: str, chunks: Iterator[bytes], budget: _Budget, depth: int) -> None:
    """Read an entry's bytes; count what every ZIP archive in them unpacks to.

    Archives are found by content, wherever their entries start, as a zip
    reader that locates them through the central directory would open them:
    junk before the first entry (a self-extracting stub), gaps between
    entries, archives one after another. Each local header found is walked
    (inflated and counted, nested archives in it one level deeper); the
    signature followed by what is no local header is data, and the search
    goes on after it. A header that is one but cannot be walked is refused.
    """
    data = ByteStream(chunks, truncated=f"the archive {name!r} inside the package is truncated")
    while data.find(LOCAL_SIG):
        if not _looks_like_local_header(data.peek(LOCAL_SIZE)):
            data.read(1)
            continue
        if depth > budget.limits.max_nested_depth:
            raise PackageInvalid("compression_ratio", f"{name!r} is an archive nested {depth} "
                                 f"levels deep; at most {budget.limits.max_nested_depth} levels "
                                 "are accepted (deeper nesting is how recursive zip bombs work)")
        _nested_entry(name, data, budget, depth)


def _nested_entry(name: str, data: ByteStream, budget: _Budget, depth: int) -> None:
    """Inflate one entry of an archive inside the package as its bytes stream by."""
    budget.count_entry(name)
    local = read_local_header(data)
    inner = f"{name} > {local.raw_name.decode('utf-8', 'replace')}"
    sized = not local.flags & FLAG_DESCRIPTOR
    start = data.pos
    if local.flags & ENCRYPTION_FLAGS or local.method not in (STORED, DEFLATED):
        if not sized:
            raise invalid(f"{inner!r} cannot be checked (encrypted or unusual compression, "
                          "with a data descriptor); store nested archives with plain entries")
        if not local.flags & ENCRYPTION_FLAGS:
            budget.add(local.size, inner)
        # Its data is not consumed: what it cannot unpack, it is searched for archives.
        return
    if local.method == STORED:
        if not sized:
            raise invalid(f"{inner!r} is stored with a data descriptor, so its end cannot be "
                          "found; nested archives must give the sizes of stored entries")
        _inspect(inner, _counted(unpack(STORED, data.pieces(local.compressed_size),
                                        local.compressed_size, repr(inner)), budget, inner),
                 budget, depth + 1)
        return
    packed = data.pieces(local.compressed_size) if sized else data.rest()
    out = unpack(DEFLATED, packed, budget.limits.max_unpacked_bytes, repr(inner),
                 push_back=None if sized else data)
    produced = _Produced(_counted(out, budget, inner))
    _inspect(inner, produced, budget, depth + 1)
    ratio, floor = budget.limits.max_compression_ratio, budget.limits.compression_ratio_floor
    packed_len = data.pos - start
    if produced.count > floor and produced.count > ratio * max(packed_len, 1):
        raise PackageInvalid("compression_ratio", f"{inner!r} unpacks to {produced.count} "
                             f"bytes from {packed_len} (a ratio over {ratio:g}), which "
                             "looks like a zip bomb")
    if not sized:
        read_descriptor(data, local.zip64, None)


def _counted(chunks: Iterable[bytes], budget: _Budget, what: str) -> Iterator[bytes]:
    for chunk in chunks:
        budget.add(len(chunk), what)
        yield chunk


class _Produced:
    """Iterate chunks while counting their bytes."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self.count = 0

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        chunk = next(self._chunks)
        self.count += len(chunk)
        return chunk


# -- the manifest ----------------------------------------------------------------------

def _no_duplicate_keys(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise PackageInvalid("manifest_invalid", f"{MANIFEST_NAME} has the key {k!r} twice")
        obj[k] = v
    return obj


def _no_constant(name: str):
    raise PackageInvalid("manifest_invalid", f"{MANIFEST_NAME} contains {name}, which is not JSON")


def parse_manifest(data: bytes, limits: PackageLimits) -> dict:
    if len(data) > limits.max_manifest_bytes:
        raise PackageInvalid("manifest_invalid", f"{MANIFEST_NAME} is {len(data)} bytes; the "
                             f"limit is {limits.max_manifest_bytes} bytes")
    if data.startswith(b"\xef\xbb\xbf"):
        raise PackageInvalid("manifest_invalid", f"{MANIFEST_NAME} starts with a byte-order mark; "
                             "save it as UTF-8 without BOM")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PackageInvalid("manifest_invalid", f"{MANIFEST_NAME} is not UTF-8 (byte "
                             f"{e.start}); save it as UTF-8") from None
    try:
        manifest = json.loads(text, object_pairs_hook=_no_duplicate_keys,
                              parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise PackageInvalid("manifest_invalid", f"{MANIFEST_NAME} is not valid JSON: {e}") from None
    except (ValueError, RecursionError) as e:  # e.g. a 5000-digit number, deep nesting
        raise PackageInvalid("manifest_invalid", f"{MANIFEST_NAME} cannot be read: "
                             f"{str(e) or type(e).__name__}") from None
    check_manifest_fields(manifest)
    return manifest


def check_manifest_fields(m) -> None:
    def bad(msg: str):
        raise PackageInvalid("manifest_invalid", f"{MANIFEST_NAME}: {msg}")

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not isinstance(m, dict):
        bad("must be a JSON object")
    for key in ("package_id", "version_code", "version_name", "name"):
        if key not in m:
            bad(f"the required field {key!r} is missing")
    pid = m["package_id"]
    if not isinstance(pid, str) or len(pid) > 128 or not PACKAGE_ID_RE.fullmatch(pid):
        bad(f"package_id {pid!r} must look like com.example.app (lower-case segments of letters, "
            "digits and _ separated by dots, at most 128 characters)")
    code = m["version_code"]
    if not is_int(code) or not 1 <= code <= MAX_VERSION_CODE:
        bad(f"version_code {code!r} must be an integer from 1 to {MAX_VERSION_CODE}")
    for key, longest in (("version_name", 64), ("name", 80)):
        value = m[key]
        if not isinstance(value, str) or not 1 <= len(value) <= longest:
            bad(f"{key} must be a string of 1 to {longest} characters")
        if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
            bad(f"{key} must not contain control characters")
    perms = m.get("permissions", [])
    if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
        bad("permissions must be a list of strings")
    if "min_platform" in m:
        mp = m["min_platform"]
        if not is_int(mp) or not 0 <= mp <= MAX_VERSION_CODE:
            bad(f"min_platform must be an integer from 0 to {MAX_VERSION_CODE}")


def check_manifest_matches(m: dict, expected: Expected) -> None:
    if m["package_id"] != expected.package_id:
        raise PackageInvalid("package_id_mismatch", f"the manifest's package_id is "
                             f"{m['package_id']!r} but this app is {expected.package_id!r}; "
                             "upload it to the app it belongs to")
    if m["version_code"] != expected.version_code:
        raise PackageInvalid("version_code_mismatch", f"the manifest's version_code is "
                             f"{m['version_code']} but the upload was declared as version "
                             f"{expected.version_code}; declare the version the manifest says")
