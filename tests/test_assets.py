"""Icons and screenshots through the API, stored in real S3 and fetched back as images."""

from __future__ import annotations

import datetime as dt
import functools
import io
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image, PngImagePlugin

from app.catalog import assets
from app.platform.errors import Unavailable
from app.platform.models import App, utcnow
from app.platform.storage import icon_key, screenshot_key
from tests import images as I
from tests.helpers import Api

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
ONLY_PIXELS = {b"IHDR", b"IDAT", b"IEND"}  # what a stripped PNG may hold


@pytest.fixture
def settings(settings, weed):
    # A bucket of the test's own, so the orphan sweep sees only its objects.
    # Assets are public by bucket policy: here their URLs reach storage
    # directly; in production the edge serves the same paths.
    bucket = f"assets-{uuid.uuid4().hex[:12]}"
    return settings.replace(bucket=bucket, cdn_url=f"{weed.endpoint}/{bucket}")


def put_icon(api, dev, app, data: bytes):
    return api.client.put(f"/v1/apps/{app['id']}/icon", headers=dev["headers"], **I.upload("icon", data))


def add_screenshot(api, dev, app, data: bytes):
    return api.client.post(f"/v1/apps/{app['id']}/screenshots", headers=dev["headers"],
                           **I.upload("screenshot", data))


def screenshots(api, dev, app) -> list[dict]:
    r = api.client.get(f"/v1/apps/{app['id']}/screenshots", headers=dev["headers"])
    assert r.status_code == 200, r.json
    return r.json["screenshots"]


def fetch(url: str) -> tuple[requests.Response, Image.Image]:
    r = requests.get(url, timeout=30)
    assert r.status_code == 200, (url, r.status_code, r.text[:200])
    return r, I.decode(r.content)


def fetch_png(url: str) -> Image.Image:
    r, im = fetch(url)
    assert r.headers["Content-Type"] == "image/png"
    assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert set(I.png_chunks(r.content)) <= ONLY_PIXELS, I.png_chunks(r.content)
    assert im.mode in ("RGB", "RGBA")
    return im


def _key(url: str) -> str:
    return url.split("/", 4)[4]  # http://host:port/bucket/key


def gone(url: str) -> bool:
    return requests.get(url, timeout=30).status_code in (403, 404)


def stored(services, app_id: str) -> set[str]:
    return {o.key for o in services.storage.list(f"assets/{app_id}/")}


def near(actual, expected, tolerance: int = 6) -> bool:
    return len(actual) == len(expected) and all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


def error(r) -> tuple[int, str]:
    return r.status_code, r.json["error"]["code"]


# -- icons -------------------------------------------------------------------------

def test_icon_is_stored_in_three_sizes_stripped_and_cached_for_a_year(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "someone@example.com")
    info.add_itxt("Comment", "made with an editor", zip=True)
    srgb = I.rgb_icc_profile(I.SRGB_RED, I.SRGB_GREEN, I.SRGB_BLUE)
    source = I.encode(I.icon(1024), "PNG", pnginfo=info, dpi=(300, 300), exif=I.oriented(1), icc_profile=srgb)
    assert {b"tEXt", b"iTXt", b"pHYs", b"eXIf", b"iCCP"} <= set(I.png_chunks(source))

    r = put_icon(api, dev, app, source)
    assert r.status_code == 200, r.json
    icons = r.json["icons"]
    assert sorted(icons) == ["128", "32", "64"]
    for size, url in icons.items():
        im = fetch_png(url)
        assert im.size == (int(size), int(size)) and im.mode == "RGBA"
        assert im.getpixel((0, 0))[3] == 0  # the transparent ground stayed transparent
        assert near(im.getpixel((int(size) // 2, int(size) // 2)), (250, 200, 0, 255))
    assert stored(services, app["id"]) == {_key(u) for u in icons.values()}
    assert all(f"/assets/{app['id']}/icons/" in u for u in icons.values())
    r = api.client.get(f"/v1/apps/{app['id']}/icon", headers=dev["headers"])
    assert r.status_code == 200 and r.json["icons"] == icons


def _transparent_red_left_opaque_blue_right() -> Image.Image:
    im = Image.new("RGBA", (1024, 1024), (255, 0, 0, 0))
    im.paste((0, 0, 255, 255), (512, 0, 1024, 1024))
    return im


def _palette_disc() -> Image.Image:
    im = Image.new("P", (256, 256), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    im.paste(1, (64, 64, 192, 192))
    return im


def _no_red_bleeds(im: Image.Image) -> bool:
    raw = im.tobytes()
    visible = [raw[i:i + 4] for i in range(0, len(raw), 4) if raw[i + 3] > 0]
    return bool(visible) and max(p[0] for p in visible) <= 8


def _quadrants_are(*colours, tolerance: int = 12):
    """Check that the 128 px icon shows `colours` at TL, TR, BL, BR."""
    spots = ((32, 32), (96, 32), (32, 96), (96, 96))
    return lambda im: all(near(im.getpixel(xy)[:3], c, tolerance) for xy, c in zip(spots, colours))


def _centre_is(mode: str, colour, tolerance: int = 0, corner_alpha: int | None = None):
    def check(im):
        return (im.mode == mode and near(im.getpixel((64, 64)), colour, tolerance)
                and (corner_alpha is None or im.getpixel((1, 1))[3] == corner_alpha))
    return check


@functools.cache
def icon_conversions() -> list[tuple]:
    """(what, image bytes, check of the 128 px result); made once per session."""
    quad = I.quadrants((400, 400), (RED, GREEN, BLUE, WHITE))
    return [
        ("JPEG turned upright by EXIF orientation 6",
         I.encode(quad, "JPEG", quality=95, exif=I.oriented(6)), _quadrants_are(BLUE, RED, WHITE, GREEN)),
        ("PNG turned upright by EXIF orientation 3",
         I.encode(quad, "PNG", exif=I.oriented(3)), _quadrants_are(WHITE, BLUE, GREEN, RED, tolerance=0)),
        ("WebP turned upright by EXIF orientation 8",
         I.encode(quad, "WEBP", lossless=True, exif=I.oriented(8)), _quadrants_are(GREEN, WHITE, RED, BLUE)),
        ("CMYK JPEG becomes RGB",
         I.encode(Image.new("CMYK", (256, 256), (0, 255, 255, 0)), "JPEG", quality=95),
         _centre_is("RGB", RED, 10)),
        ("palette PNG keeps its transparent index",
         I.encode(_palette_disc(), "PNG", transparency=0), _centre_is("RGBA", RED + (255,), corner_alpha=0)),
        ("16-bit greyscale PNG is scaled, not clipped",
         I.png16((200, 200), 0, (32768,)), _centre_is("RGB", (128, 128, 128), 1)),
        ("16-bit RGBA PNG keeps colour and alpha",
         I.png16((200, 200), 6, (65535, 0, 0, 32768)), _centre_is("RGBA", (255, 0, 0, 128), 1)),
        ("greyscale JPEG becomes grey RGB",
         I.encode(Image.new("L", (200, 200), 100), "JPEG", quality=95),
         _centre_is("RGB", (100, 100, 100), 2)),
        # (resizing premultiplies alpha in 8 bits: a faint pixel's colour may move
        # a little, what it adds when composited does not)
        ("greyscale+alpha PNG keeps alpha",
         I.encode(Image.new("LA", (200, 200), (100, 50)), "PNG"), _centre_is("RGBA", (100, 100, 100, 50), 3)),
        ("1-bit PNG becomes black and white RGB",
         I.encode(I.quadrants((256, 256), (0, 1, 1, 0), mode="1"), "PNG"),
         lambda im: im.mode == "RGB" and _quadrants_are((0, 0, 0), WHITE, WHITE, (0, 0, 0), tolerance=0)(im)),
        ("RGB PNG with a transparent key colour gets alpha",
         I.encode(I.icon(256, "RGB"), "PNG", transparency=WHITE),
         _centre_is("RGBA", (250, 200, 0, 255), corner_alpha=0)),
        ("WebP with alpha keeps it",
         I.encode(I.icon(256), "WEBP", lossless=True),
         _centre_is("RGBA", (250, 200, 0, 255), 6, corner_alpha=0)),
        ("an ICC profile is applied, then dropped",
         I.encode(Image.new("RGB", (200, 200), RED), "PNG", icc_profile=I.SWAPPED_PROFILE),
         _centre_is("RGB", GREEN, 3)),
        ("an unusable ICC profile is ignored",
         I.encode(Image.new("RGB", (200, 200), RED), "PNG", icc_profile=b"not a profile" * 20),
         _centre_is("RGB", RED)),
        ("opaque RGBA loses its useless alpha channel",
         I.encode(Image.new("RGBA", (200, 200), (10, 20, 30, 255)), "PNG"), _centre_is("RGB", (10, 20, 30))),
        ("colour under transparent pixels does not bleed into edges",
         I.encode(_transparent_red_left_opaque_blue_right(), "PNG"), _no_red_bleeds),
    ]


def test_icon_conversions(api):
    dev = api.new_developer()
    app = api.create_app(dev)
    failures = []
    for what, data, check in icon_conversions():
        r = put_icon(api, dev, app, data)
        assert r.status_code == 200, (what, r.json)
        im = fetch_png(r.json["icons"]["128"])
        for size in ("32", "64"):
            assert fetch_png(r.json["icons"][size]).size == (int(size), int(size))
        if not (im.size == (128, 128) and check(im)):
            failures.append((what, im.mode, im.getpixel((32, 32)), im.getpixel((96, 32))))
    assert not failures


@functools.cache
def icon_rejections() -> list[tuple]:
    """(what, image bytes, status, code); made once per session."""
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>'
    still, frames = I.icon(256), {"save_all": True, "append_images": [I.icon(256).rotate(90)]}
    return [
        ("text", b"this is not an image at all", 422, "not_an_image"),
        ("empty file", b"", 422, "not_an_image"),
        ("SVG", svg, 415, "unsupported_format"),
        ("GIF", I.encode(I.icon(256), "GIF"), 415, "unsupported_format"),
        ("BMP", I.encode(I.icon(256, "RGB"), "BMP"), 415, "unsupported_format"),
        ("TIFF", I.encode(I.icon(256), "TIFF"), 415, "unsupported_format"),
        ("not square", I.encode(Image.new("RGB", (256, 255)), "PNG"), 422, "image_not_square"),
        ("smaller than 128", I.encode(Image.new("RGB", (127, 127)), "PNG"), 422, "image_too_small"),
        ("larger than 4096", I.encode(Image.new("L", (4097, 4097)), "PNG"), 422, "image_too_large"),
        ("pixel bomb", I.encode(Image.new("1", (6000, 6000)), "PNG"), 422, "decompression_bomb"),
        ("text-chunk bomb", I.ztxt_bomb(I.encode(I.icon(256), "PNG")), 422, "decompression_bomb"),
        ("truncated PNG", I.encode(I.icon(256), "PNG")[:900], 422, "truncated_image"),
        ("truncated JPEG", I.encode(I.quadrants((512, 512), (RED, GREEN, BLUE, WHITE)), "JPEG")[:2500], 422,
         "truncated_image"),
        ("truncated WebP", I.encode(I.icon(256), "WEBP")[:300], 422, "truncated_image"),
        ("damaged PNG", I.corrupt_idat(I.encode(I.icon(256), "PNG")), 422, "corrupt_image"),
        ("animated PNG", I.encode(still, "PNG", **frames), 422, "animated_image"),
        ("animated WebP", I.encode(still, "WEBP", **frames), 422, "animated_image"),
    ]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_icon_rejections_harm_nothing_stored(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    good = put_icon(api, dev, app, I.encode(I.icon(256), "PNG")).json["icons"]
    before = stored(services, app["id"])
    got = {what: error(put_icon(api, dev, app, data)) for what, data, _, _ in icon_rejections()}
    assert got == {what: (status, code) for what, _, status, code in icon_rejections()}
    r = put_icon(api, dev, app, b"GIF89a" + b"\0" * 20)
    assert r.json["error"]["message"].startswith("GIF is not accepted for the icon")
    assert stored(services, app["id"]) == before
    assert api.client.get(f"/v1/apps/{app['id']}/icon", headers=dev["headers"]).json["icons"] == good
    assert all(fetch_png(u) for u in good.values())


def test_replacing_an_icon_changes_its_urls_and_retires_the_old_objects(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    first = I.encode(I.icon(512), "PNG")
    old = put_icon(api, dev, app, first).json["icons"]
    # the same icon again changes nothing: caches keep their copies
    assert put_icon(api, dev, app, first).json["icons"] == old
    assert len(stored(services, app["id"])) == 3

    new = put_icon(api, dev, app, I.encode(I.icon(512).rotate(45), "PNG")).json["icons"]
    assert set(new.values()).isdisjoint(old.values())
    assert all(gone(u) for u in old.values())
    assert all(fetch_png(u) for u in new.values())
    assert len(stored(services, app["id"])) == 3

    r = api.client.delete(f"/v1/apps/{app['id']}/icon", headers=dev["headers"])
    assert r.status_code == 204
    assert api.client.get(f"/v1/apps/{app['id']}/icon", headers=dev["headers"]).json["icons"] is None
    assert all(gone(u) for u in new.values()) and not stored(services, app["id"])
    r = api.client.delete(f"/v1/apps/{app['id']}/icon", headers=dev["headers"])
    assert error(r) == (404, "icon_not_found")


# -- upload limits -----------------------------------------------------------------

def test_upload_body_checks(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    path, headers = f"/v1/apps/{app['id']}/icon", dev["headers"]
    limit = services.settings.max_asset_bytes
    assert limit == 10 * 1024 * 1024

    # declared too large: refused on the Content-Length alone
    r = api.client.put(path, headers=headers, **I.upload("icon", b"\0" * (limit + 128 * 1024)))
    assert error(r) == (413, "file_too_large") and r.json["error"]["details"]["limit"] == limit
    # the file itself one byte over, inside a body the envelope allowance lets through
    r = api.client.put(path, headers=headers, **I.upload("icon", b"\0" * (limit + 1)))
    assert error(r) == (413, "file_too_large")
    # no Content-Length at all (chunked): the stream cap stops it
    body = (b"--b\r\nContent-Disposition: form-data; name=\"icon\"; filename=\"i.png\"\r\n\r\n"
            + b"\0" * (limit + 256 * 1024) + b"\r\n--b--\r\n")
    r = api.client.put(path, headers={**headers, "Transfer-Encoding": "chunked"},
                       input_stream=io.BytesIO(body), content_type="multipart/form-data; boundary=b",
                       environ_overrides={"wsgi.input_terminated": True})  # as gunicorn sets it
    assert error(r) == (413, "file_too_large")

    assert error(api.client.put(path, headers=headers, json={"icon": "x"})) == (415, "unsupported_media_type")
    r = api.client.put(path, headers=headers, data={"image": (io.BytesIO(b"x"), "i.png")},
                       content_type="multipart/form-data")
    assert error(r) == (400, "unknown_field")
    r = api.client.put(path, headers=headers, data={}, content_type="multipart/form-data")
    assert error(r) == (400, "missing_file")
    r = api.client.put(path, headers=headers, content_type="multipart/form-data",
                       data={"icon": [(io.BytesIO(b"a"), "a.png"), (io.BytesIO(b"b"), "b.png")]})
    assert error(r) == (400, "missing_file")
    assert not stored(services, app["id"])


def _raw_request(url: str, head: str, body_chunks=(), timeout: float = 20) -> bytes:
    """Send a request by hand and return the status line and headers of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode())
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: what we want
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return answer.split(b"\r\n\r\n")[0]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_oversized_uploads_are_refused_without_reading_the_body(api, live_stack, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    token = dev["headers"]["Authorization"]
    limit = services.settings.max_asset_bytes
    start = (f"PUT /v1/apps/{app['id']}/icon HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
             "Content-Type: multipart/form-data; boundary=b\r\n")
    # 11 MiB declared and none sent: a server that read the body would wait forever
    answer = _raw_request(live_stack.url, start + f"Content-Length: {limit + 1024 * 1024}\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413")
    # chunked, never-ending: the server answers once the cap is passed
    part = b"--b\r\nContent-Disposition: form-data; name=\"icon\"; filename=\"i.png\"\r\n\r\n"
    chunk = b"\0" * (256 * 1024)
    chunks = [b"%x\r\n%s\r\n" % (len(part), part)] + [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 200
    answer = _raw_request(live_stack.url, start + "Transfer-Encoding: chunked\r\n\r\n", chunks)
    assert answer.startswith(b"HTTP/1.1 413")
    assert not stored(services, app["id"])


# -- screenshots ---------------------------------------------------------------------

def test_screenshots_add_list_reorder_delete(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    colours = (RED, GREEN, BLUE, WHITE)
    shots = [
        I.encode(I.quadrants((1080, 1920), colours), "PNG"),
        # stored landscape, shown portrait: the EXIF orientation decides
        I.encode(I.quadrants((1920, 1080), colours), "JPEG", quality=95, exif=I.oriented(6)),
        I.encode(I.icon(640).resize((320, 640)), "PNG"),
    ]
    added = []
    for n, data in enumerate(shots, start=1):
        r = add_screenshot(api, dev, app, data)
        assert r.status_code == 201, r.json
        added.append(r.json["screenshot"])
        assert r.json["screenshot"]["position"] == n
    assert [(s["width"], s["height"]) for s in added] == [(1080, 1920), (1080, 1920), (320, 640)]
    for s in added:
        im = fetch_png(s["url"])
        assert im.size == (s["width"], s["height"])
        assert f"/assets/{app['id']}/screenshots/" in s["url"]
        if s["webp_url"]:
            r, webp = fetch(s["webp_url"])
            assert r.headers["Content-Type"] == "image/webp" and webp.size == im.size
            assert s["webp_size"] == len(r.content) < s["size"]
    upright = fetch_png(added[1]["url"])
    assert near(upright.getpixel((270, 480)), BLUE, 12) and near(upright.getpixel((810, 480)), RED, 12)
    assert fetch_png(added[2]["url"]).mode == "RGBA"
    assert screenshots(api, dev, app) == added

    r = api.client.put(f"/v1/apps/{app['id']}/screenshots/order", headers=dev["headers"],
                       json={"positions": [3, 1, 2]})
    assert r.status_code == 200, r.json
    order = [s["url"] for s in r.json["screenshots"]]
    assert order == [added[2]["url"], added[0]["url"], added[1]["url"]]  # same objects, new places
    assert [s["position"] for s in r.json["screenshots"]] == [1, 2, 3]
    assert screenshots(api, dev, app) == r.json["screenshots"]

    r = api.client.delete(f"/v1/apps/{app['id']}/screenshots/2", headers=dev["headers"])
    assert r.status_code == 200
    left = [(s["position"], s["url"]) for s in r.json["screenshots"]]
    assert left == [(1, added[2]["url"]), (2, added[1]["url"])]
    assert gone(added[0]["url"])
    keys = {_key(u) for s in r.json["screenshots"] for u in (s["url"], s["webp_url"]) if u}
    assert stored(services, app["id"]) == keys


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_screenshot_rules(api, services):
    dev = api.new_developer()
    app = api.create_app(dev)
    rejected = {
        "short side under 320": (I.encode(Image.new("RGB", (319, 600)), "PNG"), (422, "image_too_small")),
        "long side over 3840": (I.encode(Image.new("RGB", (3841, 2000)), "PNG"), (422, "image_too_large")),
        "more than 2:1": (I.encode(Image.new("RGB", (320, 641)), "JPEG"), (422, "bad_aspect_ratio")),
        "WebP": (I.encode(Image.new("RGB", (400, 400)), "WEBP"), (415, "unsupported_format")),
        "animated": (I.encode(Image.new("RGB", (400, 400)), "PNG", save_all=True,
                              append_images=[Image.new("RGB", (400, 400), RED)]), (422, "animated_image")),
        "truncated": (I.encode(I.quadrants((640, 640), (RED, GREEN, BLUE, WHITE)), "JPEG")[:3000],
                      (422, "truncated_image")),
        "bomb": (I.encode(Image.new("1", (6000, 6000)), "PNG"), (422, "decompression_bomb")),
    }
    got = {what: error(add_screenshot(api, dev, app, data)) for what, (data, _) in rejected.items()}
    assert got == {what: expected for what, (_, expected) in rejected.items()}
    assert not stored(services, app["id"])

    # exactly at the limits is fine: 320 and 3840 px sides, 2:1
    assert add_screenshot(api, dev, app, I.encode(Image.new("RGB", (320, 640)), "PNG")).status_code == 201
    assert add_screenshot(api, dev, app, I.encode(Image.new("RGB", (3840, 1920)), "JPEG")).status_code == 201
    for n in range(6):
        r = add_screenshot(api, dev, app, I.encode(Image.new("RGB", (400, 400), (n, n, n)), "PNG"))
        assert r.status_code == 201 and r.json["screenshot"]["position"] == n + 3
    r = add_screenshot(api, dev, app, I.encode(Image.new("RGB", (400, 400)), "PNG"))
    assert error(r) == (409, "too_many_screenshots") and r.json["error"]["details"]["limit"] == 8
    assert len(screenshots(api, dev, app)) == 8


def test_reorder_and_delete_check_their_input(api):
    dev = api.new_developer()
    app = api.create_app(dev)
    path = f"/v1/apps/{app['id']}/screenshots"
    order = lambda body: api.client.put(f"{path}/order", headers=dev["headers"], json=body)  # noqa: E731
    assert order({"positions": []}).json == {"screenshots": []}
    for n in range(2):
        add_screenshot(api, dev, app, I.encode(Image.new("RGB", (400, 400), (n, 0, 0)), "PNG"))
    assert error(order({"positions": [1]})) == (409, "screenshots_changed")
    assert error(order({"positions": [1, 1]})) == (409, "screenshots_changed")
    assert error(order({"positions": [1, 3]})) == (409, "screenshots_changed")
    assert error(order({"positions": [2, "1"]})) == (400, "invalid_field")
    assert error(order({"positions": [True, 2]})) == (400, "invalid_field")
    assert error(order({"positions": 2})) == (400, "invalid_field")
    assert error(order({"order": [2, 1]})) == (400, "unknown_field")
    assert error(order({})) == (400, "missing_field")
    assert [s["position"] for s in order({"positions": [2, 1]}).json["screenshots"]] == [1, 2]
    r = api.client.delete(f"{path}/3", headers=dev["headers"])
    assert error(r) == (404, "screenshot_not_found")
    assert error(api.client.delete(f"{path}/0", headers=dev["headers"])) == (404, "screenshot_not_found")


def test_concurrent_uploads_keep_the_limit_and_leave_no_stray_objects(api, app, services):
    dev = api.new_developer()
    application = api.create_app(dev)
    for n in range(7):
        add_screenshot(api, dev, application, I.encode(Image.new("RGB", (400, 400), (n, 0, 0)), "PNG"))
    shots = [I.encode(Image.new("RGB", (400, 400), (0, n * 40, 0)), "PNG") for n in range(4)]
    icons = [I.encode(I.icon(256).rotate(n * 20), "PNG") for n in range(4)]
    barrier = threading.Barrier(8)

    def send(kind, data):
        client = app.test_client()  # one per thread, as concurrent requests have
        barrier.wait()
        if kind == "icon":
            return put_icon(Api(client, services), dev, application, data).status_code
        r = add_screenshot(Api(client, services), dev, application, data)
        return r.status_code if r.status_code == 201 else error(r)

    with ThreadPoolExecutor(8) as pool:
        jobs = [("shot", d) for d in shots] + [("icon", d) for d in icons]
        results = list(pool.map(lambda job: send(*job), jobs))
    assert sorted(results[:4], key=str) == sorted([201] + [(409, "too_many_screenshots")] * 3, key=str)
    assert results[4:] == [200] * 4
    listed = screenshots(api, dev, application)
    assert [s["position"] for s in listed] == list(range(1, 9))
    current = api.client.get(f"/v1/apps/{application['id']}/icon", headers=dev["headers"]).json["icons"]
    offered = {_key(u) for u in current.values()} | {_key(s["url"]) for s in listed}
    offered |= {_key(s["webp_url"]) for s in listed if s["webp_url"]}
    assert stored(services, application["id"]) == offered  # the losers' objects are gone
    assert all(fetch_png(u) for u in current.values())


def test_two_uploads_cannot_both_take_the_last_place(api, services, monkeypatch):
    """The room check and the insert happen under the app's row lock: hold the
    first upload between them and the second must wait, then find no room."""
    from app.platform.models import database

    dev = api.new_developer()
    application = api.create_app(dev)
    for n in range(7):
        add_screenshot(api, dev, application, I.encode(Image.new("RGB", (400, 400), (n, 0, 0)), "PNG"))
    meet = threading.Barrier(2, timeout=1)  # both get here together only without the lock
    real_check = assets._check_room

    def check_room_slowly(app_row, limit):
        if database.in_transaction():
            try:
                meet.wait()
            except threading.BrokenBarrierError:
                pass
        return real_check(app_row, limit)

    monkeypatch.setattr(assets, "_check_room", check_room_slowly)
    png = I.encode(Image.new("RGB", (400, 400)), "PNG")
    app_row = App.get_by_id(application["id"])

    def upload():
        with database.connection_context():
            try:
                return assets.add_screenshot(services, app_row, png, "developer:test").position
            except assets.ApiError as e:
                return e.code

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(map(str, pool.map(lambda _: upload(), range(2))))
    assert outcomes == ["8", "too_many_screenshots"]
    assert len(screenshots(api, dev, application)) == 8


# -- access ---------------------------------------------------------------------------

def test_another_developers_app_does_not_exist(api, services):
    owner, other = api.new_developer(), api.new_developer()
    app = api.create_app(owner)
    png = I.encode(Image.new("RGB", (400, 400)), "PNG")
    add_screenshot(api, owner, app, png)
    base = f"/v1/apps/{app['id']}"
    calls = [
        lambda h: api.client.put(f"{base}/icon", headers=h, **I.upload("icon", png)),
        lambda h: api.client.get(f"{base}/icon", headers=h),
        lambda h: api.client.delete(f"{base}/icon", headers=h),
        lambda h: api.client.post(f"{base}/screenshots", headers=h, **I.upload("screenshot", png)),
        lambda h: api.client.get(f"{base}/screenshots", headers=h),
        lambda h: api.client.put(f"{base}/screenshots/order", headers=h, json={"positions": [1]}),
        lambda h: api.client.delete(f"{base}/screenshots/1", headers=h),
    ]
    before = stored(services, app["id"])
    assert [error(call(other["headers"])) for call in calls] == [(404, "app_not_found")] * len(calls)
    assert [call({}).status_code for call in calls] == [401] * len(calls)
    assert stored(services, app["id"]) == before and len(screenshots(api, owner, app)) == 1


# -- the public listing ------------------------------------------------------------------

def test_listing_shows_icon_and_screenshot_urls_that_serve_the_images(api, client):
    dev = api.new_developer()
    app = api.create_app(dev)
    api.ship(dev, app, 1)
    listing = client.get(f"/v1/packages/{app['package_id']}").json
    assert listing["icons"] is None and listing["screenshots"] == []

    put_icon(api, dev, app, I.encode(I.icon(300), "PNG"))
    for colour in (RED, BLUE):
        add_screenshot(api, dev, app, I.encode(Image.new("RGB", (600, 1000), colour), "PNG"))
    listing = client.get(f"/v1/packages/{app['package_id']}").json
    assert {size: fetch_png(url).size for size, url in listing["icons"].items()} == {
        "32": (32, 32), "64": (64, 64), "128": (128, 128)}
    shots = listing["screenshots"]
    assert [(s["position"], s["width"], s["height"]) for s in shots] == [(1, 600, 1000), (2, 600, 1000)]
    assert [fetch_png(s["url"]).getpixel((10, 10)) for s in shots] == [RED, BLUE]


# -- crash safety -------------------------------------------------------------------------

def test_a_failed_storage_write_leaves_no_row_and_no_object(api, services, monkeypatch):
    dev = api.new_developer()
    app = api.create_app(dev)
    real_put, calls = services.storage.put, []

    def put_then_fail(key, *args, **kwargs):
        calls.append(key)
        if len(calls) == 2:
            raise Unavailable("storage is unreachable", code="storage_unavailable")
        return real_put(key, *args, **kwargs)

    monkeypatch.setattr(services.storage, "put", put_then_fail)
    assert error(put_icon(api, dev, app, I.encode(I.icon(256), "PNG"))) == (503, "storage_unavailable")
    assert App.get_by_id(app["id"]).icon_number is None
    calls.clear()
    calls.append("first call passes")
    r = add_screenshot(api, dev, app, I.encode(Image.new("RGB", (400, 400)), "PNG"))
    assert error(r) == (503, "storage_unavailable")
    assert screenshots(api, dev, app) == []
    assert not stored(services, app["id"])  # the icon object written before the failure is gone


def test_objects_left_by_a_crash_are_swept_and_never_offered(api, services, monkeypatch):
    dev = api.new_developer()
    app = api.create_app(dev)
    old = put_icon(api, dev, app, I.encode(I.icon(256), "PNG")).json["icons"]

    # the row moves to the new icon, then deleting the old objects fails
    def refuse(*keys):
        raise Unavailable("storage is unreachable", code="storage_unavailable")

    monkeypatch.setattr(services.storage, "delete", refuse)
    new = put_icon(api, dev, app, I.encode(I.icon(256).rotate(90), "PNG")).json["icons"]
    monkeypatch.undo()
    assert all(fetch_png(u) for u in new.values())  # what is offered is there
    assert all(fetch_png(u) for u in old.values())  # orphans, until the sweep
    # an upload that died before its row: an object under a number no row has
    orphan = screenshot_key(app["id"], 999)
    services.storage.put(orphan, b"partial", "image/png")

    now = utcnow()
    assert assets.sweep_orphans(services, now)["items"] == 0  # too young: may be in flight
    result = assets.sweep_orphans(services, now + assets.ORPHAN_GRACE + dt.timedelta(minutes=1))
    assert result["items"] == 4 and result["kept"] == 3
    assert stored(services, app["id"]) == {icon_key(app["id"], App.get_by_id(app["id"]).icon_number, s)
                                           for s in (32, 64, 128)}
    assert all(gone(u) for u in old.values()) and all(fetch_png(u) for u in new.values())
    # numbers seen in storage are never handed out again
    assert App.get_by_id(app["id"]).asset_seq >= 999
    r = add_screenshot(api, dev, app, I.encode(Image.new("RGB", (400, 400)), "PNG"))
    assert r.json["screenshot"]["url"].endswith(f"/screenshots/{App.get_by_id(app['id']).asset_seq}.png")
    assert App.get_by_id(app["id"]).asset_seq > 999


def test_a_number_already_in_storage_is_skipped(api, services):
    """After a database restore the counter may lag storage: never overwrite."""
    dev = api.new_developer()
    app = api.create_app(dev)
    taken = App.get_by_id(app["id"]).asset_seq + 1
    services.storage.put(screenshot_key(app["id"], taken), b"older bytes", "image/png")
    r = add_screenshot(api, dev, app, I.encode(Image.new("RGB", (400, 400)), "PNG"))
    assert r.json["screenshot"]["url"].endswith(f"/screenshots/{taken + 1}.png")
    assert services.storage.read_range(screenshot_key(app["id"], taken), 0, 100) == b"older bytes"


def test_assets_migration_step_upgrades_an_older_schema(services):
    from app.platform.migrations import migrate_database
    from app.platform.models import SchemaMigration, Screenshot, database

    with database.connection_context():
        database.drop_tables([Screenshot])
        for column in ("asset_seq", "icon_number", "icon_sha256"):
            database.execute_sql(f"ALTER TABLE app DROP COLUMN {column}")
        SchemaMigration.delete().where(SchemaMigration.version == 40).execute()
        assert "icon_number" not in {c.name for c in database.get_columns("app")}
    assert 40 in migrate_database()
    with database.connection_context():
        assert {"asset_seq", "icon_number", "icon_sha256"} <= {c.name for c in database.get_columns("app")}
        assert database.table_exists("screenshot")
    assert migrate_database() == []
