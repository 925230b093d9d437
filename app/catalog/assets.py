"""Icons and screenshots: checked, normalised and stored as public, immutable PNGs.

Every upload goes through one pipeline (docs/assets.md):

1. the format is recognised from the bytes (PNG, JPEG, WebP), never from a
   name or a Content-Type, and only that format's Pillow plugin opens it;
2. the header is checked before any pixel is decoded: animation, pixel
   count (decompression bombs) and the icon or screenshot size rules;
3. the image is decoded in full (a truncated or damaged file is refused,
   never padded), turned upright by its EXIF orientation, converted to
   8-bit sRGB (through its ICC profile when it has one) keeping alpha,
   and stripped of every metadata chunk;
4. icons are downscaled to 32, 64 and 128 px, screenshots kept at their
   size; each result is an optimised PNG (plus a WebP of a screenshot when
   that is smaller).

Stored assets are immutable: each icon set and each screenshot takes the
app's next asset number, which names its objects and is never reused, so a
URL always names the same bytes and every cache may keep it for a year.
Objects are written before the row that offers them and deleted after the
row is gone; a crash in between leaves only unreferenced objects, which
`sweep_orphans` removes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image, ImageCms, ImageFile

from app.edge.purge import public_read_keys
from app.platform import metrics
from app.platform.clock import naive_utc, utcnow
from app.platform.errors import ApiError, Conflict, NotFound
from app.platform.jobs import Job
from app.platform.models import App, Screenshot, database, record_audit
from app.platform.outbox import enqueue_copies, enqueue_deletes
from app.platform.storage import ASSETS, icon_key, parse_asset_key, screenshot_key

if TYPE_CHECKING:  # annotations only: the services are built above this layer
    from app.services import Services

# -- the rules -------------------------------------------------------------------

ICON_SIZES = (128, 64, 32)  # largest first: the smaller ones are made from it
ICON_MIN_SIDE, ICON_MAX_SIDE = 128, 4096
SCREENSHOT_MIN_SIDE, SCREENSHOT_MAX_SIDE = 320, 3840
SCREENSHOT_MAX_RATIO = 2.0  # long side over short side (Settings.screenshot_max_ratio)
ICON_FORMATS = ("PNG", "JPEG", "WEBP")
SCREENSHOT_FORMATS = ("PNG", "JPEG")

# Pillow's decompression-bomb guard, set here and nowhere else: no accepted
# image has more pixels than the largest icon. Pillow refuses outright any
# image declaring more than twice this (`decompression_bomb`); between the two,
# the side limits refuse it (`image_too_large`). Either way before decoding.
MAX_IMAGE_PIXELS = ICON_MAX_SIDE * ICON_MAX_SIDE
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
# A cut file is refused, never decoded with a grey band where data ran out.
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMMUTABLE = "public, max-age=31536000, immutable"
PNG_TYPE, WEBP_TYPE = "image/png", "image/webp"
ICON_PNG_OPTIONS = {"optimize": True}  # small images: the best zlib effort costs ~15 ms
# Screenshots are large: zlib level 9 or `optimize` saves 3-8 % for three
# times the CPU (bench/assets.py); the WebP variant saves far more.
SCREENSHOT_PNG_OPTIONS = {"compress_level": 6}
SCREENSHOT_WEBP_OPTIONS = {"quality": 90, "method": 2}
# Downscale the largest icon in steps down to 3x its size, then Lanczos
# (indistinguishable from a one-step Lanczos, several times faster).
REDUCING_GAP = 3.0

# An orphan (an object no row offers) younger than this may belong to an
# upload still in flight; the sweep leaves it alone.
ORPHAN_GRACE = dt.timedelta(hours=1)

SRGB = ImageCms.createProfile("sRGB")

# EXIF orientation -> the transpositions that make the image upright.
_UPRIGHT = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}
EXIF_ORIENTATION = 0x0112


class ImageRejected(ApiError):
    """The upload is not an image this store accepts; `code` says why."""

    status, code = 422, "invalid_image"


# -- recognising and decoding ----------------------------------------------------

# Signatures of formats we accept, and of image formats we name when refusing.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"\xff\x0a", "JPEG XL"), (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
)
_ISO_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


def sniff_format(data: bytes) -> str | None:
    """The image format `data` starts with, or None if it is not an image."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp" and data[8:12] in _ISO_BRANDS:
        return _ISO_BRANDS[data[8:12]]
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<") and b"<svg" in head.lower():
        return "SVG"
    return None


def _open(data: bytes, formats: tuple[str, ...], what: str) -> Image.Image:
    """Open `data` (header only) as one of `formats`, or refuse it."""
    fmt = sniff_format(data)
    accepted = ", ".join(_name(f) for f in formats)
    if fmt is None:
        raise ImageRejected(f"the {what} is not an image; send {accepted}", code="not_an_image")
    if fmt not in formats:
        raise ImageRejected(f"{_name(fmt)} is not accepted for the {what}; send {accepted}",
                            code="unsupported_format", status=415)
    try:
        im = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError as e:
        raise _bomb(e) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise _damaged(fmt, data, e) from None
    if getattr(im, "is_animated", False):
        raise ImageRejected(f"the {what} is animated ({im.n_frames} frames); send a still image",
                            code="animated_image")
    return im


def _name(fmt: str) -> str:
    return "WebP" if fmt == "WEBP" else fmt


def _bomb(e: Exception) -> ImageRejected:
    return ImageRejected(f"the image declares far more pixels or metadata than any accepted "
                         f"image ({e}); it looks like a decompression bomb", code="decompression_bomb")


def _damaged(fmt: str, data: bytes, e: Exception) -> ImageRejected:
    if isinstance(e, ValueError) and "too large" in str(e):
        return _bomb(e)  # Pillow's cap on compressed PNG text and ICC chunks
    if isinstance(e, EOFError) or "truncated" in str(e).lower() or _cut_short(fmt, data):
        return ImageRejected(f"the {_name(fmt)} file is truncated (it ends before the image does); "
                             "upload the complete file", code="truncated_image")
    return ImageRejected(f"the {_name(fmt)} file is damaged and cannot be decoded: {e}",
                         code="corrupt_image")


def _cut_short(fmt: str, data: bytes) -> bool:
    # libwebp says only "could not create decoder object"; its RIFF header
    # tells the size the file should have. (PNG and JPEG say "truncated".)
    return fmt == "WEBP" and (len(data) < 12 or 8 + struct.unpack_from("<I", data, 4)[0] > len(data))


def _decode(im: Image.Image, data: bytes) -> Image.Image:
    """Decode every pixel; refuse truncated or damaged data."""
    try:
        im.load()
    except Image.DecompressionBombError as e:
        raise _bomb(e) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise _damaged(im.format, data, e) from None
    return im


def _upright(im: Image.Image) -> Image.Image:
    try:
        orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError, struct.error, TypeError, KeyError):
        orientation = 1  # unreadable EXIF: nothing to honour, and it is stripped anyway
    for step in _UPRIGHT.get(orientation, ()):
        im = im.transpose(step)
    return im


def _to_srgb(im: Image.Image) -> Image.Image:
    """8-bit sRGB, RGB or RGBA (alpha kept only if some pixel uses it), no metadata."""
    icc = im.info.get("icc_profile")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: scale to 8 bits (a plain convert would clip to white).
        im = im.convert("I").point(lambda v: v * (1 / 257) + 0.5).convert("L")
    target = "RGBA" if im.has_transparency_data else "RGB"
    if im.mode not in (target, "CMYK"):
        im = im.convert(target)  # palette, greyscale, 1-bit; applies tRNS transparency
    if icc:
        im = _through_profile(im, icc, target)
    if im.mode == "CMYK":
        im = im.convert("RGB")  # no usable profile: Pillow's plain CMYK formula
    if im.mode == "RGBA" and im.getchannel("A").getextrema() == (255, 255):
        im = im.convert("RGB")  # an alpha channel nobody uses only costs bytes
    im.info = {}  # nothing of the upload's metadata reaches the encoder
    return im


def _through_profile(im: Image.Image, icc: bytes, target: str) -> Image.Image:
    """Convert to sRGB with the image's own ICC profile; unchanged if unusable."""
    out_mode = "RGB" if im.mode == "CMYK" else target
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(im, profile, SRGB, outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        # A broken profile, or one for another colour space: read the values as sRGB.
        return im


def _png(im: Image.Image, options: dict) -> bytes:
    out = io.BytesIO()
    im.save(out, "PNG", **options)
    return out.getvalue()


# -- icons -----------------------------------------------------------------------

def process_icon(data: bytes) -> dict[int, bytes]:
    """The icon's PNG renditions by size (32, 64, 128), or ImageRejected."""
    im = _open(data, ICON_FORMATS, "icon")
    w, h = im.size
    if w != h:
        raise ImageRejected(f"the icon is {w}x{h}; it must be square", code="image_not_square",
                            details={"width": w, "height": h})
    if w < ICON_MIN_SIDE:
        raise ImageRejected(f"the icon is {w}x{h}; it must be at least {ICON_MIN_SIDE}x{ICON_MIN_SIDE}",
                            code="image_too_small", details={"width": w, "height": h})
    if w > ICON_MAX_SIDE:
        raise ImageRejected(f"the icon is {w}x{h}; it must be at most {ICON_MAX_SIDE}x{ICON_MAX_SIDE}",
                            code="image_too_large", details={"width": w, "height": h})
    largest = ICON_SIZES[0]
    if im.format == "JPEG":
        # Let libjpeg decode at 1/2 .. 1/8 scale, still at least 3x the target.
        im.draft(None, (int(largest * REDUCING_GAP),) * 2)
    im = _to_srgb(_upright(_decode(im, data)))
    renditions = {}
    big = im.resize((largest, largest), Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)
    for size in ICON_SIZES:
        scaled = big if size == largest else big.resize((size, size), Image.Resampling.LANCZOS)
        renditions[size] = _png(scaled, ICON_PNG_OPTIONS)
    return renditions


# -- screenshots -----------------------------------------------------------------

@dataclass(frozen=True)
class ProcessedScreenshot:
    png: bytes
    width: int
    height: int
    webp: bytes | None  # a smaller WebP of the same image, when asked for and smaller


def check_screenshot_size(w: int, h: int, max_ratio: float = SCREENSHOT_MAX_RATIO) -> None:
    short, long = min(w, h), max(w, h)
    details = {"width": w, "height": h}
    if short < SCREENSHOT_MIN_SIDE:
        raise ImageRejected(f"the screenshot is {w}x{h}; each side must be at least "
                            f"{SCREENSHOT_MIN_SIDE} px", code="image_too_small", details=details)
    if long > SCREENSHOT_MAX_SIDE:
        raise ImageRejected(f"the screenshot is {w}x{h}; each side must be at most "
                            f"{SCREENSHOT_MAX_SIDE} px", code="image_too_large", details=details)
    if long > max_ratio * short:
        raise ImageRejected(f"the screenshot is {w}x{h}; the long side may be at most "
                            f"{max_ratio:g} times the short side", code="bad_aspect_ratio",
                            details={**details, "max_ratio": max_ratio})


def process_screenshot(data: bytes, webp: bool = True,
                       max_ratio: float = SCREENSHOT_MAX_RATIO) -> ProcessedScreenshot:
    im = _open(data, SCREENSHOT_FORMATS, "screenshot")
    check_screenshot_size(*im.size, max_ratio)
    im = _to_srgb(_upright(_decode(im, data)))
    png = _png(im, SCREENSHOT_PNG_OPTIONS)
    variant = None
    if webp:
        out = io.BytesIO()
        im.save(out, "WEBP", **SCREENSHOT_WEBP_OPTIONS)
        if out.tell() < len(png):
            variant = out.getvalue()
    return ProcessedScreenshot(png, im.width, im.height, variant)


# -- storing and offering ------------------------------------------------------------

def _locked(app_id: str) -> App:
    """The app's row, re-read inside the caller's transaction and locked until it
    ends (a write takes the row lock on PostgreSQL; SQLite locks the database)."""
    App.update(updated_at=utcnow()).where(App.id == app_id).execute()
    return App.get_by_id(app_id)


def _next_number(svc: Services, app: App, probe_key) -> int:
    """Take the app's next asset number (committed at once, so never handed out twice)."""
    while True:
        with database.atomic():
            App.update(asset_seq=App.asset_seq + 1).where(App.id == app.id).execute()
            number = App.select(App.asset_seq).where(App.id == app.id).scalar()
        # After a database restore the counter may lag what storage holds: skip
        # numbers already used, or a cache could serve the old bytes.
        if not svc.storage.exists(probe_key(number)):
            return number


def _put_all(svc: Services, objects: dict[str, tuple[bytes, str]]) -> None:
    """Write every object, or none: a failure removes what was written."""
    written = []
    try:
        for key, (data, content_type) in objects.items():
            svc.storage.put(key, data, content_type, cache_control=IMMUTABLE)
            written.append(key)
    except Exception:
        try:
            svc.storage.delete(*written)
        except ApiError:
            pass  # the orphan sweep removes them
        raise


def _retire(svc: Services, keys: list[str]) -> None:
    """Delete objects no row offers any more, and make caches forget them."""
    try:
        svc.storage.delete(*keys)
    except ApiError:
        pass  # the row is gone: the orphan sweep deletes them later
    svc.purge_cached(keys)


def _listing_changed(svc: Services, app: App) -> None:
    """The app's public listing names its assets: caches keeping it forget it."""
    svc.purge_cached(public_read_keys(app.package_id)[:1])


def _timed(kind: str, process, *args):
    started = time.monotonic()
    try:
        result = process(*args)
    except ImageRejected as e:
        metrics.ASSET_UPLOADS.labels(kind, e.code).inc()
        raise
    metrics.ASSET_PROCESSING_SECONDS.labels(kind).observe(time.monotonic() - started)
    return result


def icon_keys(app_id: str, number: int) -> list[str]:
    return [icon_key(app_id, number, size) for size in ICON_SIZES]


def icon_urls(svc: Services, app: App) -> dict[str, str] | None:
    if app.icon_number is None:
        return None
    return {str(size): svc.public_object_url(icon_key(app.id, app.icon_number, size))
            for size in sorted(ICON_SIZES)}


def set_icon(svc: Services, app: App, data: bytes, actor: str) -> App:
    renditions = _timed("icon", process_icon, data)
    digest = hashlib.sha256(renditions[ICON_SIZES[0]]).hexdigest()
    if app.icon_number is not None and app.icon_sha256 == digest:
        metrics.ASSET_UPLOADS.labels("icon", "unchanged").inc()
        return app  # the same icon again: keep its URLs (and every cached copy)
    number = _next_number(svc, app, lambda n: icon_key(app.id, n, ICON_SIZES[0]))
    _put_all(svc, {icon_key(app.id, number, size): (png, PNG_TYPE) for size, png in renditions.items()})
    with database.atomic():
        current = _locked(app.id)
        replaced = current.icon_number
        App.update(icon_number=number, icon_sha256=digest).where(App.id == app.id).execute()
        enqueue_copies(svc.settings, icon_keys(app.id, number))
        if replaced is not None:
            enqueue_deletes(svc.settings, icon_keys(app.id, replaced))
        record_audit(actor, "icon.updated", "app", app.id, number=number, sha256=digest)
    _listing_changed(svc, app)
    if replaced is not None:
        _retire(svc, icon_keys(app.id, replaced))
    metrics.ASSET_UPLOADS.labels("icon", "ok").inc()
    return App.get_by_id(app.id)


def delete_icon(svc: Services, app: App, actor: str) -> None:
    with database.atomic():
        replaced = _locked(app.id).icon_number
        if replaced is None:
            raise NotFound("the app has no icon", code="icon_not_found")
        App.update(icon_number=None, icon_sha256=None).where(App.id == app.id).execute()
        enqueue_deletes(svc.settings, icon_keys(app.id, replaced))
        record_audit(actor, "icon.deleted", "app", app.id, number=replaced)
    _listing_changed(svc, app)
    _retire(svc, icon_keys(app.id, replaced))


def screenshot_keys(shot: Screenshot) -> list[str]:
    keys = [screenshot_key(shot.app_id, shot.number)]
    if shot.webp_size is not None:
        keys.append(screenshot_key(shot.app_id, shot.number, "webp"))
    return keys


def screenshot_dict(svc: Services, shot: Screenshot) -> dict:
    webp = shot.webp_size is not None
    return {
        "position": shot.position,
        "url": svc.public_object_url(screenshot_key(shot.app_id, shot.number)),
        "width": shot.width, "height": shot.height, "size": shot.size, "sha256": shot.sha256,
        "webp_url": svc.public_object_url(screenshot_key(shot.app_id, shot.number, "webp")) if webp else None,
        "webp_size": shot.webp_size,
    }


def screenshots_of(app: App) -> list[Screenshot]:
    return list(Screenshot.select().where(Screenshot.app == app).order_by(Screenshot.position))


def _check_room(app: App, limit: int) -> int:
    count = Screenshot.select().where(Screenshot.app == app).count()
    if count >= limit:
        raise Conflict(f"the app has {count} screenshots, the most allowed; delete one first",
                       code="too_many_screenshots", details={"limit": limit})
    return count


def add_screenshot(svc: Services, app: App, data: bytes, actor: str) -> Screenshot:
    limit = svc.settings.max_screenshots
    _check_room(app, limit)  # refuse early, before the work; checked again below
    shot = _timed("screenshot", process_screenshot, data, svc.settings.screenshot_webp,
                  svc.settings.screenshot_max_ratio)
    number = _next_number(svc, app, lambda n: screenshot_key(app.id, n))
    objects = {screenshot_key(app.id, number): (shot.png, PNG_TYPE)}
    if shot.webp is not None:
        objects[screenshot_key(app.id, number, "webp")] = (shot.webp, WEBP_TYPE)
    _put_all(svc, objects)
    try:
        with database.atomic():
            _locked(app.id)
            count = _check_room(app, limit)
            row = Screenshot.create(app=app.id, number=number, position=count + 1, width=shot.width,
                                    height=shot.height, size=len(shot.png),
                                    sha256=hashlib.sha256(shot.png).hexdigest(),
                                    webp_size=len(shot.webp) if shot.webp is not None else None)
            enqueue_copies(svc.settings, objects)
            record_audit(actor, "screenshot.added", "app", app.id, number=number,
                         position=row.position)
    except Conflict:
        _retire(svc, list(objects))  # another upload took the last place meanwhile
        raise
    _listing_changed(svc, app)
    metrics.ASSET_UPLOADS.labels("screenshot", "ok").inc()
    return row


def _screenshot_at(app: App, position: int) -> Screenshot:
    shot = Screenshot.get_or_none((Screenshot.app == app) & (Screenshot.position == position))
    if shot is None:
        raise NotFound(f"the app has no screenshot at position {position}", code="screenshot_not_found")
    return shot


def delete_screenshot(svc: Services, app: App, position: int, actor: str) -> None:
    with database.atomic():
        _locked(app.id)
        shot = _screenshot_at(app, position)
        shot.delete_instance()
        # Close the gap: positions stay 1..n.
        (Screenshot.update(position=Screenshot.position - 1)
         .where((Screenshot.app == app) & (Screenshot.position > position)).execute())
        enqueue_deletes(svc.settings, screenshot_keys(shot))
        record_audit(actor, "screenshot.deleted", "app", app.id, number=shot.number, position=position)
    _listing_changed(svc, app)
    _retire(svc, screenshot_keys(shot))


def reorder_screenshots(svc: Services, app: App, positions: list[int], actor: str) -> list[Screenshot]:
    """`positions` lists every current position once, in the new order."""
    with database.atomic():
        _locked(app.id)
        shots = screenshots_of(app)
        if sorted(positions) != list(range(1, len(shots) + 1)):
            raise Conflict(f"the app has {len(shots)} screenshots; list each of the positions "
                           f"1..{len(shots)} exactly once, in the new order",
                           code="screenshots_changed", details={"count": len(shots)})
        by_position = {s.position: s for s in shots}
        for new, old in enumerate(positions, start=1):
            if new != old:
                Screenshot.update(position=new).where(Screenshot.id == by_position[old].id).execute()
        record_audit(actor, "screenshot.reordered", "app", app.id, order=positions)
    _listing_changed(svc, app)
    return screenshots_of(app)


def listing(svc: Services, app: App) -> dict:
    """What the public catalogue shows of an app's assets."""
    return {"icons": icon_urls(svc, app),
            "screenshots": [screenshot_dict(svc, s) for s in screenshots_of(app)]}


# -- housekeeping -------------------------------------------------------------------

def sweep_orphans(svc: Services, now: dt.datetime) -> dict:
    """Delete asset objects no row offers (left by a crash or a failed delete).

    Objects younger than ORPHAN_GRACE are left alone: their upload may still be
    on its way to the row that will offer them. The sweep also raises each
    app's asset counter past every number found in storage, so numbers stay
    unique even after the database was restored from an older backup.
    """
    icons = {(a.id, a.icon_number) for a in App.select(App.id, App.icon_number)
             .where(App.icon_number.is_null(False))}
    shots = {(s.app_id, s.number) for s in Screenshot.select(Screenshot.app, Screenshot.number)}
    highest: dict[str, int] = {}
    orphans, unknown, kept = [], 0, 0
    for obj in svc.storage.list(f"{ASSETS}/"):
        asset = parse_asset_key(obj.key)
        if asset is None:
            unknown += 1
            continue
        app_id, number = asset.app_id, asset.number
        highest[app_id] = max(highest.get(app_id, 0), number)
        offered = (app_id, number) in (icons if asset.kind == "icon" else shots)
        modified = naive_utc(obj.last_modified) or now
        if offered:
            kept += 1
        elif now - modified >= ORPHAN_GRACE:
            orphans.append(obj.key)
    for app_id, number in highest.items():
        App.update(asset_seq=number).where((App.id == app_id) & (App.asset_seq < number)).execute()
    for start in range(0, len(orphans), 1000):
        svc.storage.delete(*orphans[start:start + 1000])
    return {"items": len(orphans), "deleted": orphans[:100], "kept": kept, "unknown": unknown}


# Housekeeping (app.platform.jobs runs each once per period across schedulers).
JOBS = (Job("assets_orphan_sweep", sweep_orphans, dt.timedelta(hours=6)),)
