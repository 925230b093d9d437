"""Applying a delta patch: source package + patch -> target package.

Streaming with bounded memory: the target is written front to back as the
operations come; the most held at once is one window of a changed entry's
old content (the patch's `max_window`, at most `max_window` of the caller)
held about three times over, plus small read buffers. Nothing depends on the
package's size.

Checks, in order: the header is one this code reads and within the caller's
limits; the patch's length and trailer digest; the source's size and
SHA-256; while writing, no operation writes past its declared size or past
the target's (refused before the write); each re-created entry's size and
CRC-32; at the end, the control stream and data section used exactly, and
the target's size and SHA-256. The patch is read at two places (its control
stream and its data section), so it must be a seekable file. Every failure is a `DeltaError` with a
stable `Reason`. When `out` is a path, a failed apply removes what it wrote;
when it is a file object, its content is then undefined and the caller
discards it.
"""

from __future__ import annotations

import hashlib
import io
import os
import zlib
from typing import BinaryIO

from .deflate import DeflateParams
from .spec import (BASE_DEFLATED, BASE_NONE, BASE_RAW, BSDIFF_RECORD, CHUNK_BSDIFF, CHUNK_ZSTD,
                   ENCODING_DEFLATE, ENCODING_STORED, HEADER_SIZE, MAX_LEB, MIN_PREFIX, OP_COPY, OP_END,
                   OP_ENTRY, OP_LITERAL, TRAILER_SIZE, DeltaError, PatchHeader, Reason, corrupt,
                   read_bsdiff_int, zstd_window_log_max)
from .zstd import ZstdDict, ZstdError, new_decompressor

READ = 1024 * 1024  # bytes read, hashed or copied at a time
PIECE = 256 * 1024  # content decoded at a time
# The window an applier accepts by default: what the store's patches use
# (8 MiB) with room to spare, and still far under 100 MiB of memory.
DEFAULT_MAX_WINDOW = 16 * 1024 * 1024

Source = str | os.PathLike | BinaryIO


def read_header(patch: Source) -> PatchHeader:
    """The patch's header (no digest or source check)."""
    with _opened(patch, "rb") as f:
        return PatchHeader.unpack(f.read(HEADER_SIZE))


def verify(patch: Source) -> PatchHeader:
    """The header of a patch whose length and trailer digest are right."""
    with _opened(patch, "rb") as f:
        header = PatchHeader.unpack(f.read(HEADER_SIZE))
        _check_digest(f, header)
        return header


def apply(source: Source, patch: Source, out: Source, *,
          expected_target_sha256: str | None = None,
          max_target_size: int | None = None,
          max_window: int = DEFAULT_MAX_WINDOW) -> PatchHeader:
    """Write the target package to `out`; returns the patch's header.

    `expected_target_sha256` and `max_target_size` come from the caller's
    own knowledge of the target (the download API's answer): a patch that
    promises another target, or a larger one, is refused before anything is
    written."""
    created = None
    try:
        with _opened(source, "rb") as src, _opened(patch, "rb") as pf:
            if not (pf.seekable() and src.seekable()):
                raise ValueError("the source and the patch must be seekable files")
            header = PatchHeader.unpack(pf.read(HEADER_SIZE))
            _check_limits(header, expected_target_sha256, max_target_size, max_window)
            _check_digest(pf, header)
            _check_source(src, header)
            if isinstance(out, (str, os.PathLike)):
                created = out
            with _opened(out, "wb") as dst:
                _Applier(src, pf, dst, header).run()
            return header
    except BaseException:
        if created is not None:
            try:
                os.unlink(created)
            except OSError:
                pass
        raise


def _opened(f: Source, mode: str):
    if isinstance(f, (str, os.PathLike)):
        return open(f, mode)
    return _Borrowed(f)


class _Borrowed:
    """A caller's file object used in a `with` without closing it."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self.f

    def __exit__(self, *exc):
        return False


def _check_limits(header: PatchHeader, expected_sha: str | None, max_target_size: int | None,
                  max_window: int) -> None:
    if expected_sha is not None and header.target_sha256 != expected_sha.lower():
        raise DeltaError(Reason.TARGET_MISMATCH,
                         f"the patch makes {header.target_sha256}, not the expected {expected_sha}")
    if max_target_size is not None and header.target_size > max_target_size:
        raise DeltaError(Reason.TOO_LARGE,
                         f"the patch declares a {header.target_size}-byte target; at most {max_target_size} allowed")
    if header.max_window > max_window:
        raise DeltaError(Reason.TOO_LARGE,
                         f"the patch needs a {header.max_window}-byte window; at most {max_window} allowed")


def _check_digest(f: BinaryIO, header: PatchHeader) -> None:
    f.seek(0, io.SEEK_END)
    actual = f.tell()
    if actual < header.patch_size:
        raise DeltaError(Reason.PATCH_TRUNCATED,
                         f"the patch has {actual} of its {header.patch_size} bytes")
    if actual > header.patch_size:
        raise corrupt(f"{actual - header.patch_size} bytes after the patch's end")
    f.seek(0)
    digest = hashlib.sha256()
    left = header.patch_size - TRAILER_SIZE
    while left:
        data = f.read(min(READ, left))
        if not data:
            raise DeltaError(Reason.PATCH_TRUNCATED, "the patch ended while it was read")
        digest.update(data)
        left -= len(data)
    if f.read(TRAILER_SIZE) != digest.digest():
        raise corrupt("the patch's digest does not match its content (damaged in transit?)")


def _check_source(src: BinaryIO, header: PatchHeader) -> None:
    src.seek(0)
    digest = hashlib.sha256()
    size = 0
    while data := src.read(READ):
        digest.update(data)
        size += len(data)
    if size != header.source_size or digest.hexdigest() != header.source_sha256:
        raise DeltaError(Reason.SOURCE_MISMATCH,
                         f"this patch applies to the {header.source_size}-byte package "
                         f"{header.source_sha256}, not to this {size}-byte one {digest.hexdigest()}")


class _Section:
    """A range of the patch, read front to back (other reads may come between)."""

    def __init__(self, f: BinaryIO, start: int, end: int, name: str):
        self.f, self.pos, self.end, self.name = f, start, end, name

    @property
    def left(self) -> int:
        return self.end - self.pos

    def read(self, n: int) -> bytes:
        if n > self.left:
            raise corrupt(f"the patch's {self.name} is shorter than its operations need")
        self.f.seek(self.pos)
        data = self.f.read(n)
        if len(data) != n:
            raise DeltaError(Reason.PATCH_TRUNCATED, "the patch ended while it was read")
        self.pos += n
        return data


class _TargetWriter:
    def __init__(self, f: BinaryIO, size: int):
        self.f = f
        self.size = size
        self.written = 0
        self.digest = hashlib.sha256()

    def room(self, n: int, what: str) -> None:
        if self.written + n > self.size:
            raise DeltaError(Reason.OUTPUT_OVERFLOW,
                             f"{what} would write past the target's declared {self.size} bytes")

    def write(self, data: bytes) -> None:
        self.room(len(data), "an operation")
        self.f.write(data)
        self.digest.update(data)
        self.written += len(data)


class _FrameReader:
    """Exactly the declared bytes of one zstd frame stored in the patch,
    decoded a piece at a time (the compressed bytes are never all held)."""

    def __init__(self, patch: _Section, length: int, prefix: bytes | memoryview | None, window_log_max: int):
        self.patch = patch
        self.left = length
        if prefix is not None and 0 < len(prefix) < MIN_PREFIX:
            raise corrupt(f"a zstd prefix of {len(prefix)} bytes (the format needs 0 or at least {MIN_PREFIX})")
        try:
            self.dec = new_decompressor(ZstdDict(prefix, is_raw=True) if prefix else None, window_log_max)
        except ZstdError as e:
            raise corrupt(f"zstd: {e}") from None

    def read(self, n: int) -> bytes:
        out = []
        while n:
            piece = self._decode(min(n, PIECE))
            out.append(piece)
            n -= len(piece)
        return b"".join(out)

    def _decode(self, n: int) -> bytes:
        while True:
            data = b""
            if self.dec.needs_input:
                if self.dec.eof or not self.left:
                    raise corrupt("a chunk's data ends before its declared size")
                data = self.patch.read(min(self.left, READ // 4))
                self.left -= len(data)
            try:
                piece = self.dec.decompress(data, n)
            except (ZstdError, EOFError) as e:
                raise corrupt(f"zstd: {e}") from None
            if piece:
                return piece
            if not data and not self.dec.needs_input:
                raise corrupt("a chunk's frame stalls")

    def finish(self) -> None:
        """The frame must end exactly here: no more output, no more input."""
        while not self.dec.eof:
            data = b""
            if self.dec.needs_input:
                if not self.left:
                    raise corrupt("a chunk's frame is cut short")
                data = self.patch.read(min(self.left, READ // 4))
                self.left -= len(data)
            try:
                if self.dec.decompress(data, 1):
                    raise corrupt("a chunk decodes to more than its declared size")
            except (ZstdError, EOFError) as e:
                raise corrupt(f"zstd: {e}") from None
        if self.left or self.dec.unused_data:
            raise corrupt("bytes after a chunk's frame")


class _BaseReader:
    """The old content an ENTRY diffs against, read front to back once:
    raw bytes of the source or the inflated content of a deflated range.
    Windows must move forward; only the current one is kept."""

    def __init__(self, src: BinaryIO, kind: int, offset: int, length: int, size: int):
        self.src, self.kind = src, kind
        self.pos, self.end, self.size = offset, offset + length, size
        self.inflater = zlib.decompressobj(-15) if kind == BASE_DEFLATED else None
        self.pending = b""  # read, not yet inflated
        self.buf = bytearray()
        self.buf_start = 0  # content offset of buf[0]
        self.produced = 0

    def window(self, offset: int, length: int) -> memoryview:
        if offset < self.buf_start:
            raise corrupt("an entry's windows move backwards")
        if offset + length > self.size:
            raise corrupt("a window reaches past its base's content")
        drop = min(offset - self.buf_start, len(self.buf))
        del self.buf[:drop]
        self.buf_start += drop
        while self.buf_start + len(self.buf) < offset + length:
            data = self._more(offset + length - self.buf_start - len(self.buf))
            if not self.buf and self.buf_start < offset:  # content before the window
                skip = min(offset - self.buf_start, len(data))
                data = data[skip:]
                self.buf_start += skip
            self.buf += data
        # A view, not a copy: released by the caller before the next window.
        return memoryview(self.buf)[:length]

    def _more(self, want: int) -> bytes:
        """The next content bytes (at most about READ)."""
        if self.kind == BASE_RAW:
            n = min(READ, self.end - self.pos)
            if n <= 0:
                raise corrupt("a window reaches past its base")
            self.src.seek(self.pos)
            data = self.src.read(n)
            if len(data) != n:
                raise corrupt("a base lies outside the source")
            self.pos += n
            return data
        while True:
            if not self.pending:
                n = min(READ // 4, self.end - self.pos)
                if n > 0:
                    self.src.seek(self.pos)
                    self.pending = self.src.read(n)
                    self.pos += len(self.pending)
            try:
                data = self.inflater.decompress(self.pending, min(READ, max(want, PIECE)))
            except zlib.error as e:
                raise corrupt(f"a deflated base does not inflate: {e}") from None
            self.pending = self.inflater.unconsumed_tail
            self.produced += len(data)
            if self.produced > self.size:
                raise corrupt("a deflated base inflates past its declared size")
            if data:
                return data
            if self.inflater.eof or self.pos >= self.end and not self.pending:
                raise corrupt("a deflated base ends before its declared size")


class _Control:
    """The decoded control stream: operations and literal bytes, decoded a
    piece at a time and parsed from that piece."""

    def __init__(self, frame: _FrameReader, size: int):
        self.frame, self.undecoded = frame, size
        self.buf, self.pos = b"", 0

    @property
    def left(self) -> int:
        return self.undecoded + len(self.buf) - self.pos

    def read(self, n: int) -> bytes:
        if n > self.left:
            raise corrupt("the control stream is shorter than its operations need")
        out = []
        while n:
            if self.pos == len(self.buf):
                take = min(self.undecoded, PIECE)
                self.buf, self.pos = self.frame.read(take), 0
                self.undecoded -= take
            piece = self.buf[self.pos:self.pos + n]
            self.pos += len(piece)
            n -= len(piece)
            out.append(piece)
        return out[0] if len(out) == 1 else b"".join(out)

    def byte(self) -> int:
        if self.pos < len(self.buf):
            self.pos += 1
            return self.buf[self.pos - 1]
        return self.read(1)[0]

    def u32(self) -> int:
        return int.from_bytes(self.read(4), "little")

    def uleb(self) -> int:
        value = shift = 0
        for _ in range(9):
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if value > MAX_LEB:
                    raise corrupt("integer out of range")
                return value
            shift += 7
        raise corrupt("integer longer than 9 bytes")


class _Applier:
    def __init__(self, src: BinaryIO, pf: BinaryIO, dst: BinaryIO, header: PatchHeader):
        self.src, self.header = src, header
        self.window_log_max = zstd_window_log_max(header.max_window)
        self.data = _Section(pf, HEADER_SIZE, header.control_offset, "data section")
        prefix = b""
        if header.prefix_length:
            src.seek(header.prefix_offset)
            prefix = src.read(header.prefix_length)
        control = _Section(pf, header.control_offset, header.control_offset + header.control_length,
                           "control stream")
        self.frame = _FrameReader(control, header.control_length, prefix, self.window_log_max)
        self.control = _Control(self.frame, header.control_size)
        self.out = _TargetWriter(dst, header.target_size)

    def run(self) -> None:
        ops = {OP_COPY: self.copy, OP_LITERAL: self.literal, OP_ENTRY: self.entry}
        while (op := self.control.byte()) != OP_END:
            if op not in ops:
                raise corrupt(f"unknown operation {op}")
            ops[op]()
        if self.control.left:
            raise corrupt(f"{self.control.left} bytes of the control stream after END")
        self.frame.finish()
        if self.data.left:
            raise corrupt(f"{self.data.left} bytes of the data section unused")
        if self.out.written != self.header.target_size:
            raise DeltaError(Reason.TARGET_MISMATCH,
                             f"the patch wrote {self.out.written} of the target's {self.header.target_size} bytes")
        if self.out.digest.hexdigest() != self.header.target_sha256:
            raise DeltaError(Reason.TARGET_MISMATCH, "the result's SHA-256 is not the target's")

    def copy(self) -> None:
        offset, length = self.control.uleb(), self.control.uleb()
        if offset + length > self.header.source_size:
            raise corrupt("COPY reaches past the source")
        self.out.room(length, "COPY")
        self.src.seek(offset)
        while length:
            data = self.src.read(min(READ, length))
            if not data:
                raise DeltaError(Reason.SOURCE_MISMATCH, "the source changed while the patch was applied")
            self.out.write(data)
            length -= len(data)

    def literal(self) -> None:
        length = self.control.uleb()
        self.out.room(length, "LITERAL")
        while length:
            piece = self.control.read(min(length, PIECE))
            self.out.write(piece)
            length -= len(piece)

    def entry(self) -> None:
        c = self.control
        kind = c.byte()
        if kind not in (BASE_NONE, BASE_RAW, BASE_DEFLATED):
            raise corrupt(f"unknown base kind {kind}")
        base_offset = base_length = 0
        if kind != BASE_NONE:
            base_offset, base_length = c.uleb(), c.uleb()
            if base_offset + base_length > self.header.source_size:
                raise corrupt("an entry's base lies outside the source")
        base_size = c.uleb()
        if (kind == BASE_NONE and base_size) or (kind == BASE_RAW and base_size != base_length):
            raise corrupt("an entry's base size does not fit its kind")
        content_size, content_crc = c.uleb(), c.u32()
        encoding = c.byte()
        params = None
        if encoding == ENCODING_DEFLATE:
            params = DeflateParams(c.byte(), c.byte(), c.byte(), c.byte())
            if not params.valid():
                raise corrupt(f"invalid deflate parameters {params}")
        elif encoding != ENCODING_STORED:
            raise corrupt(f"unknown entry encoding {encoding}")
        output_size, output_crc = c.uleb(), c.u32()
        if encoding == ENCODING_STORED and output_size != content_size:
            raise corrupt("a stored entry's output and content sizes differ")
        self.out.room(output_size, "ENTRY")
        _Entry(self, _BaseReader(self.src, kind, base_offset, base_length, base_size),
               content_size, params, output_size).run(c.uleb(), content_crc, output_crc)


class _Entry:
    """One ENTRY's chunks decoded, re-encoded and written."""

    def __init__(self, applier: _Applier, base: _BaseReader, content_size: int,
                 params: DeflateParams | None, output_size: int):
        self.a, self.base = applier, base
        self.content_left = content_size
        self.encoder = params.compressor() if params else None
        self.output_left = output_size
        self.content_crc = self.output_crc = 0

    def run(self, chunks: int, content_crc: int, output_crc: int) -> None:
        for _ in range(chunks):
            self.chunk()
        if self.content_left:
            raise corrupt("an entry's chunks fall short of its content size")
        if self.content_crc != content_crc:
            raise corrupt("an entry's content does not match its CRC-32")
        if self.encoder:
            self.put(self.encoder.flush())
        if self.output_left or self.output_crc != output_crc:
            raise DeltaError(Reason.DEFLATE_MISMATCH,
                             "re-compressing an entry did not give its original bytes "
                             f"(this zlib is {zlib.ZLIB_RUNTIME_VERSION}; the format needs zlib's own deflate)")

    def chunk(self) -> None:
        """One chunk; its window and decoder are freed on return, before
        the next chunk's are made."""
        c, p, max_window = self.a.control, self.a.data, self.a.header.max_window
        method = c.byte()
        win_offset, win_length, size, frame_length = c.uleb(), c.uleb(), c.uleb(), c.uleb()
        if win_length > max_window or size > max_window:
            raise corrupt("a chunk exceeds the patch's window")
        if size > self.content_left:
            raise corrupt("an entry's chunks exceed its content size")
        with self.base.window(win_offset, win_length) as window:
            if method == CHUNK_ZSTD:
                frame = _FrameReader(p, frame_length, window, self.a.window_log_max)
                left = size
                while left:
                    piece = frame.read(min(left, PIECE))
                    self.emit(piece)
                    left -= len(piece)
            elif method == CHUNK_BSDIFF:
                frame = _FrameReader(p, frame_length, None, self.a.window_log_max)
                self.bspatch(frame, window, size)
            else:
                raise corrupt(f"unknown chunk method {method}")
            frame.finish()

    def bspatch(self, frame: _FrameReader, old: memoryview, size: int) -> None:
        old_pos = new_pos = 0
        while new_pos < size:
            record = frame.read(BSDIFF_RECORD)
            add, extra, seek = (read_bsdiff_int(record, i) for i in (0, 8, 16))
            if add < 0 or extra < 0 or add + extra == 0 or new_pos + add + extra > size:
                raise corrupt("a bsdiff record does not fit its chunk")
            if old_pos < 0 or old_pos + add > len(old):
                raise corrupt("a bsdiff record reads outside its window")
            done = 0
            while done < add:
                diff = frame.read(min(add - done, PIECE))
                start = old_pos + done
                self.emit(add_bytes(old[start:start + len(diff)], diff))
                done += len(diff)
            done = 0
            while done < extra:
                piece = frame.read(min(extra - done, PIECE))
                self.emit(piece)
                done += len(piece)
            old_pos += add + seek
            new_pos += add + extra

    def emit(self, content: bytes) -> None:
        if len(content) > self.content_left:
            raise corrupt("an entry's chunks exceed its content size")
        self.content_left -= len(content)
        self.content_crc = zlib.crc32(content, self.content_crc)
        self.put(self.encoder.compress(content) if self.encoder else content)

    def put(self, data: bytes) -> None:
        if len(data) > self.output_left:
            if self.encoder:
                raise DeltaError(Reason.DEFLATE_MISMATCH,
                                 "a re-compressed entry is larger than the original "
                                 "(this zlib does not re-create it)")
            raise corrupt("an entry writes more than its declared size")
        self.output_left -= len(data)
        self.output_crc = zlib.crc32(data, self.output_crc)
        self.a.out.write(data)


_MASKS: dict[int, tuple[int, int]] = {}


def add_bytes(old: bytes | memoryview, diff: bytes) -> bytes:
    """Bytewise (old + diff) mod 256 without a Python loop, as one big
    integer: the low seven bits of each byte add without reaching the next
    byte, and the top bit is the XOR of both top bits and that carry."""
    n = len(diff)
    if n not in _MASKS:
        if len(_MASKS) > 64:
            _MASKS.clear()
        low = int.from_bytes(b"\x7f" * n, "little")
        _MASKS[n] = low, low ^ ((1 << 8 * n) - 1)
    low, high = _MASKS[n]
    x = int.from_bytes(old, "little")
    y = int.from_bytes(diff, "little")
    return (((x & low) + (y & low)) ^ ((x ^ y) & high)).to_bytes(n, "little")
