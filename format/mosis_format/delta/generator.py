"""Making a delta patch between two ZIP packages (docs/deltas.md).

The target is walked entry by entry in file order:

- an entry whose local header and data are the same bytes as a source
  entry's is one COPY of the source's range (neighbours merge);
- a changed entry becomes an ENTRY: its *uncompressed* content is coded
  against the uncompressed content of the most similar source entry (same
  name; else same content; else same file name elsewhere; else the same
  name but for hashes and version numbers), and the applier
  re-compresses it with the zlib parameters found here that re-create the
  original DEFLATE bytes exactly. When no parameters do (another deflate
  implementation made the archive), the compressed bytes themselves are
  coded against the old entry's compressed bytes instead;
- everything else (local headers of changed entries, the central directory,
  the end records) is LITERAL bytes in the control stream, one zstd frame
  that may refer to the source's central directory.

Each ENTRY's content is coded in chunks, each against one window of the old
content (all of it when both fit in the window), as a zstd frame using the
window as a prefix or as a bsdiff record stream, whichever is smaller (bsdiff
is tried only for binary content, where it usually wins, and only on chunks
of at most `BSDIFF_LIMIT` window and content together: its time grows with
them). Memory here is about the largest changed entry, old and new, plus
what bsdiff needs for one chunk (about 17 times `BSDIFF_LIMIT`); the
applier's stays at about two windows.

Needs the `generate` extra (bsdiff4). Raises `DeltaError` with `not_a_zip`
when either package cannot be read as a ZIP archive (or lays its entries out
over each other). Reads only the two packages and writes only `out`; a
failure or a crash leaves `out` partly written, so callers write to a name
of their own and publish the patch only once `generate` has returned.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

import bsdiff4.core

from .deflate import DeflateParams, detect
from .spec import (BASE_DEFLATED, BASE_NONE, BASE_RAW, CHUNK_BSDIFF, CHUNK_ZSTD, ENCODING_DEFLATE,
                   ENCODING_STORED, HEADER_SIZE, MAX_WINDOW, MIN_PREFIX, OP_COPY, OP_END, OP_ENTRY, OP_LITERAL,
                   TRAILER_SIZE, DeltaError, PatchHeader, Reason, bsdiff_int, read_bsdiff_int, uleb,
                   zstd_window_log_max)
from .zstd import compress

DEFAULT_WINDOW = 16 * 1024 * 1024
READ = 1024 * 1024
LOCAL_SIG = b"PK\x03\x04"
# zstd levels by chunk size: the highest where it pays, lower where the time
# would grow past the generation budget (measured: bench/deltas.py). Binary
# chunks are also tried with bsdiff, which usually wins there, so their zstd
# attempt is a cheap one.
LEVELS = ((1024 * 1024, 19), (4 * 1024 * 1024, 17), (MAX_WINDOW, 12))
BINARY_ZSTD_LEVEL = 12
# bsdiff costs about 0.4 CPU-seconds per MB of window and content (its suffix
# sort of the window, then the matching), 4-5 s for a 10 MB shared library,
# where zstd with the window as prefix takes a tenth of that. It is tried only
# on chunks whose window and content together are at most this (measured with
# bench/deltas.py: on the wheel corpus, the libraries above it took 30 of 49
# CPU-seconds to save 4% of the patch bytes).
BSDIFF_LIMIT = 8 * 1024 * 1024
MEDIA_LEVEL = 9
CONTROL_LEVEL = 19
# The applier keeps the control stream's prefix for the whole patch: a
# central directory rarely needs more (65 535 entries of 60 bytes).
CONTROL_PREFIX = 4 * 1024 * 1024
# A deflated entry no parameters re-create costs every trial (each one deflates
# a block or two, some 10 ms on a large entry); once such entries outnumber
# those re-created, and are this many or none was re-created yet, the
# archive's next entries get only a few trials (its previous match first).
GIVE_UP_AFTER, FEW_TRIES = 3, 4


@dataclass
class PatchInfo:
    size: int
    sha256: str
    header: PatchHeader
    stats: dict = field(default_factory=dict)


@dataclass
class _Entry:
    name: str
    header_offset: int
    data_offset: int
    data_end: int
    method: int
    crc: int
    size: int  # uncompressed


class _Archive:
    """One package's entries and raw bytes, read through zipfile."""

    def __init__(self, path: str | os.PathLike, role: str):
        self.f = open(path, "rb")
        self.size = os.fstat(self.f.fileno()).st_size
        try:
            with zipfile.ZipFile(self.f) as zf:
                infos = zf.infolist()
                self.cd_offset = zf.start_dir
            self.entries = [self._entry(info) for info in infos]
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as e:
            self.f.close()
            raise DeltaError(Reason.NOT_A_ZIP, f"the {role} package is not a readable ZIP archive: {e}") from None
        except DeltaError:
            self.f.close()
            raise
        self.role = role

    def _entry(self, info: zipfile.ZipInfo) -> _Entry:
        local = self.read(info.header_offset, 30)
        if len(local) != 30 or local[:4] != LOCAL_SIG:
            raise zipfile.BadZipFile(f"no local header for {info.filename!r}")
        data_offset = info.header_offset + 30 + int.from_bytes(local[26:28], "little") \
            + int.from_bytes(local[28:30], "little")
        data_end = data_offset + info.compress_size
        if data_end > self.cd_offset:
            raise zipfile.BadZipFile(f"{info.filename!r} runs into the central directory")
        return _Entry(info.filename, info.header_offset, data_offset, data_end,
                      info.compress_type, info.CRC, info.file_size)

    def read(self, offset: int, length: int) -> bytes:
        self.f.seek(offset)
        return self.f.read(length)

    def content(self, e: _Entry) -> bytes | None:
        """The entry's uncompressed bytes, or None when they cannot be had
        (a method other than stored/deflate, or a CRC that does not match)."""
        raw = self.read(e.data_offset, e.data_end - e.data_offset)
        if e.method == zipfile.ZIP_STORED:
            data = raw
        elif e.method == zipfile.ZIP_DEFLATED:
            d = zlib.decompressobj(-15)
            try:
                data = d.decompress(raw) + d.flush()
            except zlib.error:
                return None
            if not d.eof:
                return None
        else:
            return None
        return data if len(data) == e.size and zlib.crc32(data) == e.crc else None

    def close(self) -> None:
        self.f.close()


def _sha256(f: BinaryIO) -> str:
    digest = hashlib.sha256()
    f.seek(0)
    while data := f.read(READ):
        digest.update(data)
    return digest.hexdigest()


def generate(source: str | os.PathLike, target: str | os.PathLike, out: str | os.PathLike | BinaryIO,
             *, window: int = DEFAULT_WINDOW, bsdiff: bool = True,
             bsdiff_limit: int = BSDIFF_LIMIT) -> PatchInfo:
    """Write a patch that turns the package `source` into `target` to `out`
    (a path, or a binary file opened for reading and writing). Binary chunks
    whose window and content add up to at most `bsdiff_limit` bytes are also
    tried with bsdiff; `bsdiff=False` codes them with zstd only: faster on
    packages of native libraries, their patches larger
    (bench/results/deltas.json)."""
    if not 4096 <= window <= MAX_WINDOW:
        raise ValueError(f"window must be within 4096..{MAX_WINDOW}")
    src = _Archive(source, "source")
    try:
        dst = _Archive(target, "target")
    except DeltaError:
        src.close()
        raise
    try:
        if isinstance(out, (str, os.PathLike)):
            with open(out, "w+b") as f:
                return _Maker(src, dst, f, window, bsdiff_limit if bsdiff else 0).make()
        return _Maker(src, dst, out, window, bsdiff_limit if bsdiff else 0).make()
    finally:
        src.close()
        dst.close()


class _Maker:
    def __init__(self, src: _Archive, dst: _Archive, out: BinaryIO, window: int, bsdiff_limit: int):
        self.src, self.dst, self.out, self.window = src, dst, out, window
        self.bsdiff_limit = bsdiff_limit
        self.window_log = zstd_window_log_max(window)
        self.hint: DeflateParams | None = None
        self.deflate_found = self.deflate_missed = 0
        self.stats = {"entries": len(dst.entries), "copied": 0, "diffed": 0, "carried": 0,
                      "new": 0, "literal_bytes": 0, "chunks_zstd": 0, "chunks_bsdiff": 0}

    # -- planning --------------------------------------------------------

    def plan(self) -> list[tuple]:
        """("copy", src_offset, length) | ("literal", start, end) | ("entry", target, base)."""
        by_name = {e.name: e for e in self.src.entries}
        by_content = {}
        by_basename: dict[str, list[_Entry]] = {}
        by_stem: dict[str, list[_Entry]] = {}
        for e in self.src.entries:
            by_content.setdefault((e.crc, e.size), e)
            by_basename.setdefault(e.name.rsplit("/", 1)[-1], []).append(e)
            by_stem.setdefault(_stem(e.name), []).append(e)
        ops: list[tuple] = []
        pos = 0
        for t in sorted(self.dst.entries, key=lambda e: e.header_offset):
            if t.header_offset < pos:
                raise DeltaError(Reason.NOT_A_ZIP, f"the target's entry {t.name!r} overlaps another")
            self._literal(ops, pos, t.header_offset)
            same_content = by_content.get((t.crc, t.size))
            s = by_name.get(t.name) or same_content \
                or _similar(t, by_basename.get(t.name.rsplit("/", 1)[-1], [])) \
                or _similar(t, by_stem.get(_stem(t.name), []))
            if s is not None and _may_be_same(s, t) \
                    and self._same(s.header_offset, s.data_end, t.header_offset, t.data_end):
                self._copy(ops, s.header_offset, t.data_end - t.header_offset)
                self.stats["copied"] += 1
                pos = t.data_end
                continue
            self._literal(ops, t.header_offset, t.data_offset)
            for c in (s, same_content):  # the data may be another entry's, moved
                if c is not None and _may_be_same(c, t) \
                        and self._same(c.data_offset, c.data_end, t.data_offset, t.data_end):
                    self._copy(ops, c.data_offset, t.data_end - t.data_offset)
                    self.stats["copied"] += 1
                    break
            else:
                ops.append(("entry", t, s))
            pos = t.data_end
        self._literal(ops, pos, self.dst.size)
        return ops

    def _same(self, s_start: int, s_end: int, t_start: int, t_end: int) -> bool:
        if s_end - s_start != t_end - t_start:
            return False
        for off in range(0, t_end - t_start, READ):
            n = min(READ, t_end - t_start - off)
            if self.src.read(s_start + off, n) != self.dst.read(t_start + off, n):
                return False
        return True

    def _copy(self, ops: list, offset: int, length: int) -> None:
        if ops and ops[-1][0] == "copy" and ops[-1][1] + ops[-1][2] == offset:
            ops[-1] = ("copy", ops[-1][1], ops[-1][2] + length)
        else:
            ops.append(("copy", offset, length))

    def _literal(self, ops: list, start: int, end: int) -> None:
        if end <= start:
            return
        # Bytes the source has right after the range just copied (a data
        # descriptor, padding) extend the copy instead.
        if ops and ops[-1][0] == "copy":
            src_at = ops[-1][1] + ops[-1][2]
            n = end - start
            if src_at + n <= self.src.size and self.src.read(src_at, n) == self.dst.read(start, n):
                self._copy(ops, src_at, n)
                return
        if ops and ops[-1][0] == "literal" and ops[-1][2] == start:
            ops[-1] = ("literal", ops[-1][1], end)
        else:
            ops.append(("literal", start, end))

    # -- writing ---------------------------------------------------------

    def make(self) -> PatchInfo:
        ops = self.plan()
        out = self.out
        out.seek(0)
        out.truncate()
        out.write(bytes(HEADER_SIZE))
        control = self.control = bytearray()
        for op in ops:
            if op[0] == "copy":
                control += bytes([OP_COPY]) + uleb(op[1]) + uleb(op[2])
            elif op[0] == "literal":
                control += bytes([OP_LITERAL]) + uleb(op[2] - op[1]) + self.dst.read(op[1], op[2] - op[1])
                self.stats["literal_bytes"] += op[2] - op[1]
            else:
                self.entry(op[1], op[2])  # its chunks' frames go to the data section now
        control.append(OP_END)
        # The control stream, primed with the source's central directory:
        # the target's headers and directory are mostly the same names and fields.
        prefix_offset = min(self.src.cd_offset, self.src.size)
        prefix_length = min(self.window, CONTROL_PREFIX, self.src.size - prefix_offset)
        if prefix_length < MIN_PREFIX:
            prefix_length = 0
        frame = compress(bytes(control), CONTROL_LEVEL, self.window_log,
                         self.src.read(prefix_offset, prefix_length))
        control_offset = out.tell()
        out.write(frame)
        self.stats.update(data_bytes=control_offset - HEADER_SIZE, control_bytes=len(frame),
                          control_size=len(control))
        patch_size = out.tell() + TRAILER_SIZE
        header = PatchHeader(self.window, patch_size, self.src.size, _sha256(self.src.f),
                             self.dst.size, _sha256(self.dst.f), prefix_offset, prefix_length,
                             control_offset, len(frame), len(control))
        out.seek(0)
        out.write(header.pack())
        out.flush()
        out.seek(0)
        digest = hashlib.sha256()
        left = patch_size - TRAILER_SIZE
        while left:
            data = out.read(min(READ, left))
            digest.update(data)
            left -= len(data)
        out.seek(patch_size - TRAILER_SIZE)
        out.write(digest.digest())
        out.flush()
        out.seek(0)
        whole = hashlib.sha256()
        while data := out.read(READ):
            whole.update(data)
        return PatchInfo(patch_size, whole.hexdigest(), header, self.stats)

    def entry(self, t: _Entry, s: _Entry | None) -> None:
        raw = self.dst.read(t.data_offset, t.data_end - t.data_offset)
        content, params = raw, None
        if t.method == zipfile.ZIP_DEFLATED and (plain := self.dst.content(t)) is not None:
            unlikely = self.deflate_missed > self.deflate_found and \
                (self.deflate_found == 0 or self.deflate_missed >= GIVE_UP_AFTER)
            tries = FEW_TRIES if unlikely else None
            params = detect(plain, raw, self.hint, **({"max_tries": tries} if tries else {}))
            if params:
                self.hint = params
                self.deflate_found += 1
                content = plain
            else:
                self.deflate_missed += 1
        # The base: the old entry's content when the new content is
        # uncompressed, its raw bytes when the new entry is carried as is.
        kind, base, base_range = BASE_NONE, b"", (0, 0)
        uncompressed = params is not None or t.method == zipfile.ZIP_STORED
        if s is not None:
            old_raw_range = (s.data_offset, s.data_end - s.data_offset)
            if uncompressed and (old := self.src.content(s)) is not None:
                kind = BASE_DEFLATED if s.method == zipfile.ZIP_DEFLATED else BASE_RAW
                base, base_range = old, old_raw_range
            else:
                kind, base_range = BASE_RAW, old_raw_range
                base = self.src.read(*old_raw_range)
        self.stats["new" if s is None else "diffed" if uncompressed else "carried"] += 1

        head = bytearray([OP_ENTRY, kind])  # to the control stream
        if kind != BASE_NONE:
            head += uleb(base_range[0]) + uleb(base_range[1])
        head += uleb(len(base)) + uleb(len(content)) + zlib.crc32(content).to_bytes(4, "little")
        if params:
            head += bytes([ENCODING_DEFLATE, params.level, params.mem_level, params.strategy,
                           params.window_bits])
        else:
            head += bytes([ENCODING_STORED])
        head += uleb(len(raw)) + zlib.crc32(raw).to_bytes(4, "little")
        chunks = self.chunks(len(content), len(base))
        head += uleb(len(chunks))
        self.control += head
        for (t0, size, w0, wlen) in chunks:
            record, frame = self.chunk(base[w0:w0 + wlen], content[t0:t0 + size], w0)
            self.control += record
            self.out.write(frame)

    def chunks(self, n: int, m: int) -> list[tuple[int, int, int, int]]:
        """(content offset, size, window offset, window length) per chunk:
        one chunk against the whole base when both fit the window; else
        half-window chunks, each against the window centred on where the
        chunk's bytes sit proportionally in the old content."""
        w = self.window
        if n == 0:
            return []
        if n <= w and m <= w:
            return [(0, n, 0, m)]
        step = w // 2
        out = []
        for t0 in range(0, n, step):
            size = min(step, n - t0)
            centre = (t0 + size // 2) * m // max(n, 1)
            wlen = min(w, m)
            w0 = min(max(0, centre - wlen // 2), m - wlen)
            out.append((t0, size, w0, wlen))
        return out

    def chunk(self, old: bytes, new: bytes, w0: int) -> tuple[bytes, bytes]:
        """The chunk's record (for the control stream) and its frame (for
        the data section)."""
        level = next(lv for limit, lv in LEVELS if len(new) <= limit)
        log = max(10, min(self.window_log, (len(old) + len(new) - 1).bit_length()))
        prefix = old if len(old) >= MIN_PREFIX else b""
        if _incompressible(new):
            # Media: only long verbatim runs of the old file help; a fast
            # level with long-distance matching finds them all.
            best = (CHUNK_ZSTD, compress(new, MEDIA_LEVEL, log, prefix, long=True))
            binary = False
        else:
            binary = bool(old) and len(old) + len(new) <= self.bsdiff_limit and b"\0" in new
            if binary:
                level = min(level, BINARY_ZSTD_LEVEL)
            best = (CHUNK_ZSTD, compress(new, level, log, prefix))
        if binary and (stream := _bsdiff_stream(old, new)) is not None:
            level = next(lv for limit, lv in LEVELS if len(stream) <= limit)
            frame = compress(stream, level, max(10, min(self.window_log, (len(stream) - 1).bit_length())))
            if len(frame) < len(best[1]):
                best = (CHUNK_BSDIFF, frame)
        method, frame = best
        if method == CHUNK_ZSTD and len(old) < MIN_PREFIX:
            w0, old = 0, b""
        self.stats["chunks_zstd" if method == CHUNK_ZSTD else "chunks_bsdiff"] += 1
        return bytes([method]) + uleb(w0) + uleb(len(old)) + uleb(len(new)) + uleb(len(frame)), frame


def _may_be_same(s: _Entry, t: _Entry) -> bool:
    """Whether two entries' data can be the same bytes: the central
    directory's CRC-32, sizes and method agree (a changed entry is never
    read twice to find out)."""
    return (s.crc, s.size, s.method, s.data_end - s.data_offset) == \
        (t.crc, t.size, t.method, t.data_end - t.data_offset)


def _incompressible(data: bytes) -> bool:
    """Media and archives: bsdiff finds nothing in them that zstd does not.
    Judged from samples across the content (one place can mislead: a
    library may embed compressed tables); small content whole."""
    if len(data) < 1024:
        return False
    sample = data
    if len(data) > 5 * 16384:
        step = len(data) // 5
        sample = b"".join(data[i * step + step // 2:i * step + step // 2 + 16384] for i in range(5))
    return len(compress(sample, 1, 17)) > 0.95 * len(sample)


def _stem(name: str) -> str:
    """A file name without what changes between builds: a library's version
    after `.so`, hashes and numbers (auditwheel renames `libjpeg.so.62` to
    `libjpeg-77ae51ab.so.62.4.0`, a new hash each release)."""
    base = re.sub(r"\.so(\.\d+)+$", ".so", name.rsplit("/", 1)[-1])
    return re.sub(r"[0-9a-f]{8,}|\d+", "#", base)


def _similar(t: _Entry, candidates: list[_Entry]) -> _Entry | None:
    """Among source entries with the target's file name, the one whose path
    shares the most trailing components (a renamed folder), then the
    closest size."""
    if not candidates:
        return None
    parts = t.name.split("/")

    def score(e: _Entry):
        other = e.name.split("/")
        common = 0
        while common < min(len(parts), len(other)) and parts[-1 - common] == other[-1 - common]:
            common += 1
        return (common, -abs(e.size - t.size))
    return max(candidates, key=score)


def _bsdiff_stream(old: bytes, new: bytes) -> bytes | None:
    """bsdiff's records interleaved (control, its diff bytes, its extra
    bytes), or None when they break the format's rules (never seen; the
    zstd chunk is then used).

    bsdiff writes empty records (add = copy = 0) that only seek; the format
    has none, so a seek is folded into the record before it. A leading one
    (the new content starts where the old window does not) becomes a first
    record of one diff byte against the window's first byte, its seek the
    leading one: the chunk's bytes and later positions stay the same."""
    control, diff, extra = bsdiff4.core.diff(old, new)
    records: list[list] = []  # [add, copy, seek, diff bytes, extra bytes]
    lead = d = x = 0
    for i in range(0, len(control), 24):
        add, copy, seek = (read_bsdiff_int(control, i + k) for k in (0, 8, 16))
        if add < 0 or copy < 0:
            return None
        dd, xx = diff[d:d + add], extra[x:x + copy]
        d, x = d + add, x + copy
        if not records and lead and (add or copy):
            if add:
                records.append([1, 0, lead, bytes([(new[0] - old[0]) & 0xFF]), b""])
                add, dd = add - 1, dd[1:]
            else:
                seek += lead
        if add == 0 and copy == 0:
            if records:
                records[-1][2] += seek
            else:
                lead += seek
            continue
        records.append([add, copy, seek, dd, xx])
    out = []
    old_pos = new_pos = 0
    for add, copy, seek, dd, xx in records:
        if old_pos < 0 or old_pos + add > len(old):
            return None
        out += [bsdiff_int(add) + bsdiff_int(copy) + bsdiff_int(seek), dd, xx]
        old_pos += add + seek
        new_pos += add + copy
    if new_pos != len(new):
        return None
    return b"".join(out)
