"""Re-creating an entry's DEFLATE stream byte for byte.

A patch carries a changed entry as a diff of its uncompressed content and the
zlib parameters that turn the content back into the original compressed
bytes. That works only with zlib's own deflate (madler/zlib 1.2.x and 1.3.x,
which Python's zlib module wraps): other implementations (zlib-ng, ISA-L,
libdeflate, miniz) produce different, equally valid streams. The maker
therefore searches the parameters that reproduce an entry (`detect`) and
carries the entry's compressed bytes instead when none does; the applier
checks what it produced against the size and CRC-32 in the patch.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

FEED = 64 * 1024  # content fed to a trial at a time: a wrong guess shows within a block or two


@dataclass(frozen=True)
class DeflateParams:
    level: int  # 1..9
    mem_level: int  # 1..9
    strategy: int  # 0 default, 1 filtered, 2 huffman only, 3 RLE, 4 fixed
    window_bits: int  # 9..15 (raw deflate: no zlib or gzip wrapper)

    def compressor(self):
        return zlib.compressobj(self.level, zlib.DEFLATED, -self.window_bits,
                                self.mem_level, self.strategy)

    def valid(self) -> bool:
        return (1 <= self.level <= 9 and 1 <= self.mem_level <= 9 and 0 <= self.strategy <= 4
                and 9 <= self.window_bits <= 15)


def _candidates() -> list[DeflateParams]:
    """Every combination worth a try, the likeliest first: Python's zipfile,
    Java's Deflater and most zip tools use level 6 (or 9), memLevel 8,
    the default strategy and a 32 KiB window. Smaller memLevels and windows
    are so rare that trying them costs more than it finds."""
    out = []
    for mem_level in (8, 9):
        for level in (6, 9, 1, 2, 3, 4, 5, 7, 8):
            for strategy in (0, 1, 4):
                # Levels 1-3 use deflate_fast, which ignores FILTERED.
                if strategy == 1 and level < 4:
                    continue
                out.append(DeflateParams(level, mem_level, strategy, 15))
        # HUFFMAN_ONLY and RLE ignore the level.
        out += [DeflateParams(6, mem_level, 2, 15), DeflateParams(6, mem_level, 3, 15)]
    return out


CANDIDATES = _candidates()


def reproduces(params: DeflateParams, content: bytes, compressed: bytes) -> bool:
    """Whether deflating `content` with `params` gives exactly `compressed`;
    stops at the first output byte that differs."""
    deflater = params.compressor()
    done = 0
    for start in range(0, len(content), FEED):
        out = deflater.compress(content[start:start + FEED])
        if out:
            if compressed[done:done + len(out)] != out:
                return False
            done += len(out)
    out = deflater.flush()
    return compressed[done:] == out


def detect(content: bytes, compressed: bytes, hint: DeflateParams | None = None,
           max_tries: int = len(CANDIDATES)) -> DeflateParams | None:
    """The zlib parameters that turn `content` into `compressed`, or None.
    `hint` (what matched the archive's previous entry) is tried first."""
    order = [hint] + [c for c in CANDIDATES if c != hint] if hint else CANDIDATES
    for params in order[:max_tries]:
        if reproduces(params, content, compressed):
            return params
    return None
