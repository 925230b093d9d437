"""The byte layout of a delta patch (docs/deltas.md is the normative text).

A patch is a fixed header, a data section (the zstd frames of changed
entries' chunks, in the order they are used), a control stream (one zstd
frame: the operations that write the target front to back, with the literal
bytes among them) and a 32-byte trailer, the SHA-256 of every byte before
it. Integers in the header are little-endian; in operations, sizes and
offsets are unsigned LEB128 (at most 9 bytes, < 2**63).

This module only describes and checks: the header codec, the integer
codecs, the reason codes every failure carries, and the message the store
signs. It does no I/O of its own.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum

MAGIC = b"MOSISDLT"
VERSION = 1
# The name the download API gives the format (`delta.algorithm`).
ALGORITHM = "mosis-zipdelta-v1"

HEADER = struct.Struct("<8sHHIQQ32sQ32sQIIQQQ")
HEADER_SIZE = HEADER.size  # 144
TRAILER_SIZE = 32

# Operations (in the control stream).
OP_END, OP_COPY, OP_LITERAL, OP_ENTRY = 0, 1, 2, 3
# Where an ENTRY's base content comes from.
BASE_NONE, BASE_RAW, BASE_DEFLATED = 0, 1, 2
# How an ENTRY's content is written to the target.
ENCODING_STORED, ENCODING_DEFLATE = 0, 8
# How a chunk of an ENTRY's content is coded.
CHUNK_ZSTD, CHUNK_BSDIFF = 1, 2
# A zstd prefix is empty or at least this long (zstd's raw-content minimum).
MIN_PREFIX = 8
BSDIFF_RECORD = 24  # three signed 64-bit integers: add, copy, seek

# The largest window (and chunk) a patch may ask for; what one patch asks is
# in its header, and an applier may insist on less.
MAX_WINDOW = 64 * 1024 * 1024
MAX_LEB = (1 << 63) - 1


class Reason(StrEnum):
    """Stable reason codes: callers branch on these, never on messages."""

    NOT_A_ZIP = "not_a_zip"  # generate: a package is not a readable ZIP archive
    NOT_A_PATCH = "not_a_patch"  # no patch magic
    UNSUPPORTED_VERSION = "unsupported_version"  # a format version or flag this code does not know
    PATCH_TRUNCATED = "patch_truncated"  # the patch ends before its declared size
    PATCH_CORRUPT = "patch_corrupt"  # digest mismatch, impossible field, undecodable data
    SOURCE_MISMATCH = "source_mismatch"  # the source is not the package the patch was made from
    TOO_LARGE = "too_large"  # the patch declares more output or memory than allowed
    OUTPUT_OVERFLOW = "output_overflow"  # an operation would write past a declared size
    DEFLATE_MISMATCH = "deflate_mismatch"  # this zlib does not re-create an entry's bytes
    TARGET_MISMATCH = "target_mismatch"  # the result is not the package the patch promises


class DeltaError(Exception):
    """A patch cannot be made or applied: a reason code and a message."""

    def __init__(self, code: Reason, message: str):
        super().__init__(f"{code}: {message}")
        self.code = Reason(code)
        self.message = message


def corrupt(message: str) -> DeltaError:
    return DeltaError(Reason.PATCH_CORRUPT, message)


@dataclass(frozen=True)
class PatchHeader:
    max_window: int
    patch_size: int
    source_size: int
    source_sha256: str
    target_size: int
    target_sha256: str
    prefix_offset: int  # the control stream's zstd prefix: a range of the source
    prefix_length: int
    control_offset: int  # the control stream's frame in the patch
    control_length: int
    control_size: int  # what it decodes to

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, VERSION, 0, self.max_window, self.patch_size,
                           self.source_size, bytes.fromhex(self.source_sha256),
                           self.target_size, bytes.fromhex(self.target_sha256),
                           self.prefix_offset, self.prefix_length, 0,
                           self.control_offset, self.control_length, self.control_size)

    @classmethod
    def unpack(cls, data: bytes) -> "PatchHeader":
        if len(data) < 8 or data[:8] != MAGIC:
            raise DeltaError(Reason.NOT_A_PATCH, "this is not a Mosis delta patch (no MOSISDLT magic)")
        if len(data) < HEADER_SIZE:
            raise DeltaError(Reason.PATCH_TRUNCATED, "the patch ends inside its header")
        (_, version, flags, max_window, patch_size, source_size, source_sha, target_size,
         target_sha, prefix_offset, prefix_length, reserved, control_offset, control_length,
         control_size) = HEADER.unpack(data[:HEADER_SIZE])
        if version != VERSION or flags or reserved:
            raise DeltaError(Reason.UNSUPPORTED_VERSION,
                             f"patch format version {version} (flags {flags:#x}); this reads version {VERSION}")
        header = cls(max_window, patch_size, source_size, source_sha.hex(), target_size,
                     target_sha.hex(), prefix_offset, prefix_length, control_offset, control_length,
                     control_size)
        header.check()
        return header

    def check(self) -> None:
        if not 0 < self.max_window <= MAX_WINDOW:
            raise corrupt(f"window of {self.max_window} bytes is outside 1..{MAX_WINDOW}")
        if self.patch_size < HEADER_SIZE + 1 + TRAILER_SIZE:
            raise corrupt(f"declared patch size {self.patch_size} is too small")
        if self.control_offset < HEADER_SIZE or not self.control_length \
                or self.control_offset + self.control_length != self.patch_size - TRAILER_SIZE:
            raise corrupt("the control stream is not where the format puts it")
        if self.prefix_length > self.max_window or 0 < self.prefix_length < MIN_PREFIX:
            raise corrupt(f"a control prefix of {self.prefix_length} bytes")
        if self.prefix_offset + self.prefix_length > self.source_size:
            raise corrupt("the control prefix lies outside the source")
        if max(self.target_size, self.source_size, self.control_size, self.patch_size) > MAX_LEB:
            raise corrupt("impossible size")


def zstd_window_log_max(max_window: int) -> int:
    """The largest zstd window a patch with this window may use: twice the
    window (a prefix plus the content it helps with), as a power of two."""
    return max(10, (2 * max_window - 1).bit_length())


def uleb(value: int) -> bytes:
    if not 0 <= value <= MAX_LEB:
        raise ValueError(f"{value} does not fit the patch's integers")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def bsdiff_int(value: int) -> bytes:
    """bsdiff's signed 64-bit integer: magnitude little-endian, sign in the top bit."""
    magnitude = -value if value < 0 else value
    if magnitude > MAX_LEB:
        raise ValueError(f"{value} does not fit a bsdiff integer")
    return (magnitude | (1 << 63 if value < 0 else 0)).to_bytes(8, "little")


def read_bsdiff_int(data: bytes, offset: int) -> int:
    raw = int.from_bytes(data[offset:offset + 8], "little")
    magnitude = raw & MAX_LEB
    return -magnitude if raw >> 63 else magnitude


def signed_message(package_id: str, from_version_code: int, from_sha256: str,
                   to_version_code: int, to_sha256: str, patch_sha256: str, patch_size: int) -> bytes:
    """The bytes the store signs (Ed25519) for a patch it hands out."""
    return (f"mosis-delta-v1\n{package_id}\n{int(from_version_code)}\n{from_sha256}\n"
            f"{int(to_version_code)}\n{to_sha256}\n{patch_sha256}\n{int(patch_size)}").encode()
