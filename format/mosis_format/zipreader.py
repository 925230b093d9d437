"""Reading ZIP archives whose bytes nobody vouches for.

Only what package validation needs, in two parts:

- the end records and the central directory, parsed from ranged reads of the
  object's tail (`read_central_directory`);
- a sequential reader (`ByteStream`) over the whole object, with which local
  headers are parsed (`read_local_header`), entries inflated with their size
  and CRC-32 checked (`unpack`) and data descriptors read.

Every length and offset is checked before it is used, so no input makes this
module read out of bounds, allocate more than it was told to, or loop. Every
fault is a `PackageInvalid`, usually with the reason code `invalid_zip`.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from isal import isal_zlib

# The contract's reason codes travel on this one exception type.


class PackageInvalid(Exception):
    """A package fails validation: a reason code and a message for the developer."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def invalid(message: str) -> PackageInvalid:
    return PackageInvalid("invalid_zip", message)


EOCD_SIG = b"PK\x05\x06"
ZIP64_LOCATOR_SIG = b"PK\x06\x07"
ZIP64_EOCD_SIG = b"PK\x06\x06"
CENTRAL_SIG = b"PK\x01\x02"
LOCAL_SIG = b"PK\x03\x04"
DESCRIPTOR_SIG = b"PK\x07\x08"
EOCD_SIZE, ZIP64_LOCATOR_SIZE, ZIP64_EOCD_MIN = 22, 20, 56
CENTRAL_SIZE, LOCAL_SIZE = 46, 30
MAX_COMMENT = 0xFFFF
MAX_CD_FLOOR, MAX_CD_PER_ENTRY = 1024 * 1024, 1024
U16, U32 = 0xFFFF, 0xFFFFFFFF

STORED, DEFLATED, AES_METHOD = 0, 8, 99
FLAG_ENCRYPTED = 0x0001
FLAG_DESCRIPTOR = 0x0008
FLAG_STRONG_ENCRYPTION = 0x0040
FLAG_UTF8 = 0x0800
FLAG_MASKED_HEADERS = 0x2000  # central directory encryption
ENCRYPTION_FLAGS = FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_MASKED_HEADERS

EXTRA_ZIP64 = 0x0001
EXTRA_STRONG_ENCRYPTION = 0x0017
EXTRA_UNICODE_PATH = 0x7075  # Info-ZIP: a UTF-8 name that extractors prefer
EXTRA_ASI_UNIX = 0x756E  # Info-ZIP: Unix mode and symlink target
EXTRA_AES = 0x9901
# The fields whose content is used: one of each per entry, or readers disagree.
# (Others may repeat: alignment tools pad local headers with zero bytes.)
INTERPRETED_EXTRA = {EXTRA_ZIP64, EXTRA_UNICODE_PATH, EXTRA_ASI_UNIX, EXTRA_AES}

S_IFMT, S_IFLNK, S_IFREG, S_IFDIR = 0o170000, 0o120000, 0o100000, 0o040000

# Inflate with ISA-L (about twice as fast as zlib, and it releases the GIL);
# its output is the same DEFLATE, checked with the same CRC-32.
crc32 = isal_zlib.crc32
INFLATE_ERRORS = (isal_zlib.error, zlib.error)
OUT_CHUNK = 1024 * 1024  # the most one inflate call may produce: bounds memory
# The most one inflate call is given. When the output is capped, the inflater
# copies the input it has not used into a new `unconsumed_tail` on every call:
# a 4 MiB read inflated 1 MiB at a time copied its own size about twice over.
# Small slices rarely hit the cap, so they are not copied.
IN_CHUNK = 256 * 1024


# -- the central directory ----------------------------------------------------

@dataclass
class Header:
    """What local headers and central-directory records both say of an entry."""

    raw_name: bytes
    flags: int
    method: int
    crc: int
    compressed_size: int
    size: int


@dataclass
class Entry(Header):
    """One central-directory record, with every size resolved (ZIP64 included)."""

    name: str  # as the archive declares it: UTF-8 when flagged, else CP437
    offset: int
    mode: int  # Unix type and permission bits from the external attributes (0: none)
    # Other names an extractor might use for this entry: the bytes read as
    # UTF-8 without the flag, the Info-ZIP Unicode path field.
    other_names: list[str] = field(default_factory=list)
    extra_ids: set[int] = field(default_factory=set)
    symlink_in_extra: bool = False

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & ENCRYPTION_FLAGS or self.method == AES_METHOD
                    or self.extra_ids & {EXTRA_AES, EXTRA_STRONG_ENCRYPTION})

    @property
    def data_end_min(self) -> int:
        """Where this entry's data ends, at the least (its local extra field is unknown)."""
        return self.offset + LOCAL_SIZE + len(self.raw_name) + self.compressed_size


@dataclass
class Directory:
    entries: list[Entry]
    offset: int  # where the central directory starts: the end of the entries
    end: int  # where it ends: the ZIP64 end record or the end record


RangeReader = Callable[[int, int], bytes]


def read_central_directory(size: int, read_range: RangeReader, max_entries: int) -> Directory:
    """Parse the end records and the central directory of a `size`-byte object."""
    if size < EOCD_SIZE:
        raise invalid("the file is too short to be a ZIP archive")
    tail_len = min(size, EOCD_SIZE + MAX_COMMENT + ZIP64_LOCATOR_SIZE)
    tail_start = size - tail_len
    tail = _exact(read_range(tail_start, tail_len), tail_len)
    at = _find_eocd(tail, read_range)
    disk, cd_disk, n_disk, n_total, cd_size, cd_offset = struct.unpack_from("<HHHHII", tail, at + 4)
    end = tail_start + at
    loc = at - ZIP64_LOCATOR_SIZE
    if loc >= 0 and tail[loc:loc + 4] == ZIP64_LOCATOR_SIG:
        values = _read_zip64_end(tail, loc, tail_start, read_range)
        for small, big in zip((disk, cd_disk, n_disk, n_total, cd_size, cd_offset), values[:6]):
            if small not in (U16, U32) and small != big:
                raise invalid("the end record and the ZIP64 end record disagree")
        disk, cd_disk, n_disk, n_total, cd_size, cd_offset, end = values
    elif U16 in (disk, cd_disk, n_disk, n_total) or U32 in (cd_size, cd_offset):
        raise invalid("the end record needs a ZIP64 end record, and there is none")
    if disk or cd_disk or n_disk != n_total:
        raise invalid("multi-volume (split) ZIP archives are not supported")
    if n_total == 0:
        raise invalid("the archive is empty; a package holds at least manifest.json")
    if n_total > max_entries:
        raise PackageInvalid("too_many_entries", f"the archive has {n_total} entries; the limit "
                             f"is {max_entries}")
    if cd_offset + cd_size != end:
        # Offsets inside would not point where they claim: bytes were
        # prepended, or the archive was cut or spliced.
        raise invalid("the central directory is not where the end record says it is (bytes "
                      "were added before the archive, or the file is damaged)")
    if cd_size < n_total * CENTRAL_SIZE:
        raise invalid("the central directory is smaller than its entries")
    if cd_size > max(MAX_CD_FLOOR, n_total * MAX_CD_PER_ENTRY):
        # It is held in memory: refuse what no real package needs.
        raise invalid(f"the central directory is {cd_size} bytes for {n_total} entries; names "
                      "and extra fields average at most 1 KiB per entry")
    if cd_offset >= tail_start:  # usually: the tail already holds the central directory
        cd = tail[cd_offset - tail_start:cd_offset - tail_start + cd_size]
    else:
        cd = _exact(read_range(cd_offset, cd_size), cd_size)
    return Directory(_parse_central(cd, n_total), cd_offset, end)


def _exact(data: bytes, length: int) -> bytes:
    if len(data) != length:
        raise invalid("the archive is truncated")
    return data


def _find_eocd(tail: bytes, read_range: RangeReader) -> int:
    """The end record: the one whose comment reaches exactly to the end."""
    found, trailing = [], False
    pos = tail.rfind(EOCD_SIG, 0, len(tail) - EOCD_SIZE + 4)
    while pos >= 0:
        comment_len = struct.unpack_from("<H", tail, pos + 20)[0]
        end = pos + EOCD_SIZE + comment_len
        if end == len(tail):
            found.append(pos)
        trailing = trailing or end < len(tail)
        pos = tail.rfind(EOCD_SIG, 0, pos)
    if len(found) > 1 or (found and EOCD_SIG in tail[found[0] + EOCD_SIZE:]):
        # Parsers that search differently would find different archives.
        raise invalid("the archive comment contains an end-of-archive signature; remove the "
                      "comment")
    if found:
        return found[0]
    if trailing:
        raise invalid("there are bytes after the end of the archive; upload the .mosis file "
                      "exactly as it was built")
    if read_range(0, 4) == LOCAL_SIG:
        raise invalid("the archive is truncated (its end-of-central-directory record is "
                      "missing); upload the whole file")
    raise invalid("this is not a ZIP archive (it has no end-of-central-directory record); "
                  "build the package with a zip tool")


def _read_zip64_end(tail: bytes, loc: int, tail_start: int, read_range: RangeReader):
    _, loc_disk, rec_offset, disks = struct.unpack_from("<4sIQI", tail, loc)
    if loc_disk != 0 or disks != 1:
        raise invalid("multi-volume (split) ZIP archives are not supported")
    loc_abs = tail_start + loc
    if rec_offset + ZIP64_EOCD_MIN > loc_abs:
        raise invalid("the ZIP64 end record is out of place")
    rec = _exact(read_range(rec_offset, ZIP64_EOCD_MIN), ZIP64_EOCD_MIN)
    (sig, rec_size, _, _, disk, cd_disk, n_disk, n_total, cd_size, cd_offset) = struct.unpack(
        "<4sQHHIIQQQQ", rec)
    if sig != ZIP64_EOCD_SIG:
        raise invalid("the ZIP64 end record is damaged")
    if rec_offset + 12 + rec_size != loc_abs:
        raise invalid("there are bytes between the ZIP64 end record and its locator")
    return disk, cd_disk, n_disk, n_total, cd_size, cd_offset, rec_offset


def _parse_central(cd: bytes, count: int) -> list[Entry]:
    entries = []
    pos = 0
    for _ in range(count):
        if pos + CENTRAL_SIZE > len(cd):
            raise invalid("the central directory is truncated")
        (sig, _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len, comment_len,
         disk, _, ext_attr, offset) = struct.unpack_from("<4sHHHHHHIIIHHHHHII", cd, pos)
        if sig != CENTRAL_SIG:
            raise invalid("the central directory is damaged")
        name_at = pos + CENTRAL_SIZE
        pos = name_at + name_len + extra_len + comment_len
        if pos > len(cd):
            raise invalid("the central directory is truncated")
        raw_name = cd[name_at:name_at + name_len]
        extra = parse_extra(cd[name_at + name_len:name_at + name_len + extra_len])
        usize, csize, offset, disk = _zip64_values(extra.get(EXTRA_ZIP64), usize, csize, offset,
                                                   disk)
        if disk != 0:
            raise invalid("multi-volume (split) ZIP archives are not supported")
        entry = Entry(name=decode_name(raw_name, flags), raw_name=raw_name, flags=flags,
                      method=method, crc=crc, compressed_size=csize, size=usize, offset=offset,
                      mode=ext_attr >> 16, extra_ids=set(extra))
        entry.other_names = other_names(raw_name, flags, extra)
        asi = extra.get(EXTRA_ASI_UNIX)
        entry.symlink_in_extra = (asi is not None and len(asi) >= 6
                                  and struct.unpack_from("<H", asi, 4)[0] & S_IFMT == S_IFLNK)
        entries.append(entry)
    if pos != len(cd):
        raise invalid("the central directory holds more than its entries")
    return entries


def parse_extra(data: bytes) -> dict[int, bytes]:
    """The well-formed fields of an extra area (padding after them is ignored)."""
    fields: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(data):
        tag, length = struct.unpack_from("<HH", data, pos)
        if pos + 4 + length > len(data):
            break
        if tag in fields and tag in INTERPRETED_EXTRA:
            raise invalid(f"an extra field (0x{tag:04x}) appears twice in one entry")
        fields.setdefault(tag, data[pos + 4:pos + 4 + length])
        pos += 4 + length
    return fields


def _zip64_values(body: bytes | None, *values: int) -> tuple[int, ...]:
    """Replace the maxed-out fields with the ZIP64 extra field's values, in order."""
    maxed = [U32, U32, U32, U16]
    out = list(values)
    needed = [i for i, (v, m) in enumerate(zip(values, maxed)) if v == m]
    if not needed:
        return tuple(out)
    if body is None or len(body) < sum(4 if i == 3 else 8 for i in needed):
        raise invalid("an entry needs a ZIP64 extra field, and it is missing or too short")
    pos = 0
    for i in needed:
        if i == 3:
            out[i] = struct.unpack_from("<I", body, pos)[0]
        else:
            out[i] = struct.unpack_from("<Q", body, pos)[0]
            pos += 8
    return tuple(out)


def decode_name(raw: bytes, flags: int) -> str:
    if flags & FLAG_UTF8:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PackageInvalid("unsafe_path", f"an entry name is not valid UTF-8: {raw!r}") from None
    return raw.decode("cp437")


def other_names(raw: bytes, flags: int, extra: dict[int, bytes]) -> list[str]:
    names = []
    if not flags & FLAG_UTF8 and not raw.isascii():
        try:
            names.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    unicode_path = extra.get(EXTRA_UNICODE_PATH)
    if unicode_path is not None:
        if len(unicode_path) < 5 or unicode_path[0] != 1:
            raise invalid(f"the Unicode path field of {raw!r} is damaged")
        try:
            names.append(unicode_path[5:].decode("utf-8"))
        except UnicodeDecodeError:
            raise PackageInvalid("unsafe_path", f"the Unicode path field of {raw!r} is not "
                                 "valid UTF-8") from None
    return names


# -- the sequential pass ------------------------------------------------------------

_patterns: dict[bytes, re.Pattern] = {}


class ByteStream:
    """Sequential reads over an iterator of chunks, with peek and push-back."""

    def __init__(self, chunks: Iterable[bytes], truncated: str = "the archive is truncated"):
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buf = memoryview(b"")
        self._truncated = truncated
        self.pos = 0

    def _fill(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._buf = memoryview(chunk)
                return True
        return False

    def pieces(self, n: int) -> Iterator[memoryview]:
        """The next n bytes in the pieces they arrived in (nothing is copied)."""
        while n > 0:
            if not self._buf and not self._fill():
                raise invalid(self._truncated)
            piece = self._buf[:n]
            self._buf = self._buf[len(piece):]
            self.pos += len(piece)
            n -= len(piece)
            yield piece

    def rest(self) -> Iterator[memoryview]:
        """Every remaining byte, in pieces."""
        while self._buf or self._fill():
            piece, self._buf = self._buf, memoryview(b"")
            self.pos += len(piece)
            yield piece

    def read(self, n: int) -> bytes:
        return b"".join(bytes(p) for p in self.pieces(n))

    def find(self, signature: bytes) -> bool:
        """Skip to the next occurrence of `signature`, left unread; False
        (everything read) if there is none. Nothing is copied but the few
        bytes of a signature split between chunks."""
        pattern = _patterns.get(signature)
        if pattern is None:
            pattern = _patterns[signature] = re.compile(re.escape(signature))
        keep = len(signature) - 1
        carry = b""  # the last bytes read (fewer than the signature): its start, maybe
        while True:
            if carry:
                at = (carry + bytes(self._buf[:keep])).find(signature)
                if 0 <= at < len(carry):
                    self._buf = memoryview(carry[at:] + bytes(self._buf))
                    self.pos -= len(carry) - at
                    return True
            found = pattern.search(self._buf)
            if found:
                self._buf = self._buf[found.start():]
                self.pos += found.start()
                return True
            carry = bytes(self._buf[-keep:]) if len(self._buf) >= keep else (carry + bytes(self._buf))[-keep:]
            self.pos += len(self._buf)
            self._buf = memoryview(b"")
            if not self._fill():
                return False

    def peek(self, n: int) -> bytes:
        """Up to n next bytes, without consuming them (fewer only at the end)."""
        while len(self._buf) < n:
            old = bytes(self._buf)
            if not self._fill():
                self._buf = memoryview(old)
                break
            self._buf = memoryview(old + bytes(self._buf))
        return bytes(self._buf[:n])

    def unread(self, data: bytes) -> None:
        if data:
            self._buf = memoryview(bytes(data) + bytes(self._buf))
            self.pos -= len(data)

    def drain(self) -> None:
        for _ in self.rest():
            pass


@dataclass
class LocalHeader(Header):
    extra: dict[int, bytes]

    @property
    def zip64(self) -> bool:
        return EXTRA_ZIP64 in self.extra


def read_local_header(stream: ByteStream) -> LocalHeader:
    head = stream.read(LOCAL_SIZE)
    (sig, _, flags, method, _, _, crc, csize, usize, name_len, extra_len) = struct.unpack(
        "<4sHHHHHIIIHH", head)
    if sig != LOCAL_SIG:
        raise invalid("a local file header is missing or damaged")
    raw_name = stream.read(name_len)
    extra = parse_extra(stream.read(extra_len))
    if EXTRA_ZIP64 in extra and (usize == U32 or csize == U32):
        body = extra[EXTRA_ZIP64]
        if len(body) < 16:
            raise invalid(f"the local ZIP64 field of {raw_name!r} is too short")
        usize, csize = struct.unpack_from("<QQ", body)
    return LocalHeader(raw_name, flags, method, crc, csize, usize, extra)


def read_descriptor(stream: ByteStream, wide: bool, expected: tuple[int, int, int] | None):
    """Consume a data descriptor; return its (crc, compressed size, size).

    Its signature is optional, so a descriptor without one whose CRC happens
    to equal the signature is told apart by the values it must carry.
    """
    fmt = "<IQQ" if wide else "<III"
    length = struct.calcsize(fmt)
    head = stream.peek(4 + length)
    readings = []
    if head[:4] == DESCRIPTOR_SIG and len(head) >= 4 + length:
        readings.append((4 + length, struct.unpack_from(fmt, head, 4)))
    if len(head) >= length:
        readings.append((length, struct.unpack_from(fmt, head, 0)))
    for consumed, values in readings:
        if expected is None or values == expected:
            stream.read(consumed)
            return values
    raise invalid("a data descriptor is missing or does not match the central directory")


class _slices:
    """The pieces cut to at most IN_CHUNK bytes (views: nothing is copied).

    Stopping early, `left()` is what remains of the piece last cut into.
    """

    def __init__(self, pieces: Iterable[memoryview]):
        self._pieces = iter(pieces)
        self._piece = memoryview(b"")

    def __iter__(self):
        return self

    def __next__(self) -> memoryview:
        while not self._piece:
            self._piece = memoryview(next(self._pieces))
        part, self._piece = self._piece[:IN_CHUNK], self._piece[IN_CHUNK:]
        return part

    def left(self) -> bytes:
        return bytes(self._piece)


def unpack(method: int, data: Iterable[memoryview], size_limit: int, what: str,
           expect_crc: int | None = None, push_back: ByteStream | None = None) -> Iterator[bytes]:
    """Yield the unpacked bytes of one entry, at most OUT_CHUNK at a time.

    `data` is the entry's packed bytes. More than `size_limit` unpacked bytes
    is an error, found after producing at most one byte too many, so a lying
    header never makes this inflate more than it declared. With `push_back`,
    `data` may run past the entry (its size is unknown: a data descriptor
    follows): inflating stops at the end of the DEFLATE stream and the bytes
    after it go back to that stream. The CRC-32 is checked at the end.
    """
    crc = 0
    produced = 0

    def emit(out: bytes) -> bytes:
        nonlocal crc, produced
        produced += len(out)
        if produced > size_limit:
            raise invalid(f"{what} unpacks to more than its declared {size_limit} bytes")
        crc = crc32(out, crc)
        return out

    if method == STORED:
        for piece in data:
            yield emit(piece)
    else:
        inflater = isal_zlib.decompressobj(-15)
        try:
            parts = _slices(data)
            for part in parts:
                if inflater.eof:
                    if push_back is not None:
                        push_back.unread(bytes(part) + parts.left())
                        break
                    raise invalid(f"the compressed data of {what} has bytes after its end")
                cap = min(OUT_CHUNK, size_limit + 1 - produced)
                out = inflater.decompress(part, cap)
                if out:
                    yield emit(out)
                # The output was capped: drain what the inflater still holds
                # (zlib hands it back as unconsumed_tail, ISA-L keeps it).
                while not inflater.eof and (inflater.unconsumed_tail or len(out) == cap):
                    cap = min(OUT_CHUNK, size_limit + 1 - produced)
                    out = inflater.decompress(inflater.unconsumed_tail, cap)
                    if not out:
                        break
                    yield emit(out)
                if inflater.eof and inflater.unused_data:
                    if push_back is None:
                        raise invalid(f"the compressed data of {what} has bytes after its end")
                    push_back.unread(inflater.unused_data + parts.left())
                    break
            if not inflater.eof:
                raise invalid(f"the compressed data of {what} is cut short")
        except INFLATE_ERRORS as err:
            raise invalid(f"the compressed data of {what} is damaged ({err})") from None
    if expect_crc is not None:
        if produced != size_limit:
            raise invalid(f"{what} unpacks to {produced} bytes, not the declared {size_limit}")
        if crc != expect_crc:
            raise PackageInvalid("crc_mismatch", f"the CRC-32 of {what} does not match its data "
                                 "(the file is corrupt; build the package again)")
