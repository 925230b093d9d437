"""Images made at test time: every format, mode and defect the asset pipeline meets."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image, ImageDraw

EXIF_ORIENTATION = 0x0112


def encode(im: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **options)
    return out.getvalue()


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def quadrants(size: tuple[int, int], colours, mode: str = "RGB") -> Image.Image:
    """An image split in four: top-left, top-right, bottom-left, bottom-right."""
    w, h = size
    im = Image.new(mode, size)
    draw = ImageDraw.Draw(im)
    boxes = ((0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h), (w // 2, h // 2, w, h))
    for box, colour in zip(boxes, colours):
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=colour)
    return im


def icon(size: int = 256, mode: str = "RGBA") -> Image.Image:
    """A plausible icon: a disc on a transparent ground, with some detail."""
    im = Image.new(mode, (size, size), (0, 0, 0, 0) if mode == "RGBA" else (255, 255, 255))
    draw, n = ImageDraw.Draw(im), len(mode)
    draw.ellipse((size // 8, size // 8, size * 7 // 8, size * 7 // 8), fill=(30, 120, 220, 255)[:n])
    draw.rectangle((size * 3 // 8, size * 3 // 8, size * 5 // 8, size * 5 // 8), fill=(250, 200, 0, 255)[:n])
    return im


def oriented(orientation: int) -> Image.Exif:
    data = Image.Exif()
    data[EXIF_ORIENTATION] = orientation
    return data


# -- PNG built by hand: what Pillow cannot write ---------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_chunks(data: bytes) -> list[bytes]:
    """The chunk types of a PNG file, in order."""
    assert data.startswith(PNG_SIGNATURE)
    pos, kinds = len(PNG_SIGNATURE), []
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        kinds.append(kind)
        pos += 12 + length
    return kinds


def png16(size: tuple[int, int], colour_type: int, samples: tuple[int, ...]) -> bytes:
    """A 16-bit PNG of one colour (colour_type 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA)."""
    w, h = size
    row = b"\x00" + struct.pack(f">{len(samples)}H", *samples) * w
    return (PNG_SIGNATURE
            + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(row * h))
            + png_chunk(b"IEND", b""))


def with_chunk_before_idat(png: bytes, kind: bytes, body: bytes) -> bytes:
    at = png.index(b"IDAT") - 4
    return png[:at] + png_chunk(kind, body) + png[at:]


def ztxt_bomb(png: bytes, inflated: int = 8 * 1024 * 1024) -> bytes:
    """A zTXt chunk of a few KiB that inflates to `inflated` bytes."""
    return with_chunk_before_idat(png, b"zTXt", b"Comment\x00\x00" + zlib.compress(b"\x00" * inflated, 9))


def corrupt_idat(png: bytes) -> bytes:
    """Valid chunk structure and CRCs, but IDAT holds garbage instead of zlib data."""
    start = png.index(b"IDAT") - 4
    length = struct.unpack_from(">I", png, start)[0]
    garbage = bytes((i * 37 + 11) % 256 for i in range(length))
    return png[:start] + png_chunk(b"IDAT", garbage) + png[start + 12 + length:]


# -- an ICC profile built by hand ------------------------------------------------

SRGB_RED, SRGB_GREEN, SRGB_BLUE = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def rgb_icc_profile(red, green, blue, gamma: float = 2.2, name: str = "Test RGB") -> bytes:
    """A minimal ICC v2 matrix/TRC RGB display profile with the given colorants."""
    desc = name.encode() + b"\0"
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags = [(b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(desc)) + desc + b"\0" * 79),
            (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", _xyz(*red)), (b"gXYZ", _xyz(*green)), (b"bXYZ", _xyz(*blue)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset = 128 + 4 + 12 * len(tags)
    table = body = b""
    for sig, data in tags:
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    header = (struct.pack(">I", offset + len(body)) + b"\0\0\0\0" + struct.pack(">I", 0x02100000)
              + b"mntrRGB XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 28
              + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"\0" * 48)
    return header + struct.pack(">I", len(tags)) + table + body


# A profile whose red and green colorants are swapped: stored (255, 0, 0)
# means sRGB green. Read without the profile, it would come out red.
SWAPPED_PROFILE = rgb_icc_profile(SRGB_GREEN, SRGB_RED, SRGB_BLUE, name="Swapped RG")


# -- multipart ---------------------------------------------------------------------

def upload(field: str, data: bytes, filename: str = "image.bin") -> dict:
    """Keyword arguments for the Flask test client to send one file."""
    return {"data": {field: (io.BytesIO(data), filename)}, "content_type": "multipart/form-data"}
