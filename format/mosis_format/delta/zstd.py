"""The one place that imports zstd: the standard library's `compression.zstd`
from Python 3.14, its backport before. Frames are plain zstd frames (RFC 8878);
a "prefix" is raw content the frame may refer to, like `zstd --patch-from`."""

from __future__ import annotations

try:
    from compression.zstd import (CompressionParameter, DecompressionParameter, ZstdCompressor,
                                  ZstdDecompressor, ZstdDict, ZstdError)
except ImportError:  # Python < 3.14
    from backports.zstd import (CompressionParameter, DecompressionParameter, ZstdCompressor,
                                ZstdDecompressor, ZstdDict, ZstdError)

__all__ = ["ZstdDict", "ZstdError", "new_compressor", "new_decompressor", "compress"]


def new_decompressor(prefix: ZstdDict | None, window_log_max: int) -> ZstdDecompressor:
    return ZstdDecompressor(zstd_dict=prefix.as_prefix if prefix else None,
                            options={DecompressionParameter.window_log_max: window_log_max})


# Past this, a prefix is matched with long-distance matching too: the
# ordinary match finders of the faster levels index only its last part.
LONG_PREFIX = 1024 * 1024


def new_compressor(level: int, window_log: int, prefix: ZstdDict | None = None,
                   long: bool = False) -> ZstdCompressor:
    """A compressor whose frames carry no checksum (the patch has its own)."""
    options = {CompressionParameter.compression_level: level,
               CompressionParameter.window_log: window_log,
               CompressionParameter.checksum_flag: 0}
    if long:
        options[CompressionParameter.enable_long_distance_matching] = 1
    return ZstdCompressor(options=options, zstd_dict=prefix.as_prefix if prefix else None)


def compress(data: bytes, level: int, window_log: int, prefix: bytes = b"", long: bool = False) -> bytes:
    """One whole frame of `data`, optionally referring to `prefix`."""
    c = new_compressor(level, window_log, ZstdDict(prefix, is_raw=True) if prefix else None,
                       long=long or len(prefix) >= LONG_PREFIX)
    return c.compress(data, ZstdCompressor.FLUSH_FRAME)

