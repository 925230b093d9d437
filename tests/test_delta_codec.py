"""The delta codec (format/mosis_format/delta): round trips on synthetic and
real packages, and every hostile patch refused with its reason code."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mosis_format.delta import DeltaError, Reason, apply, read_header, signed_message, verify
from mosis_format.delta import spec
from mosis_format.delta.deflate import DeflateParams, detect
from mosis_format.delta.generator import generate
from tests.delta_packages import (STORED, Member, app_members, code, evolve,
                                  foreign_deflate, media, text, write_zip)

ROOT = Path(__file__).resolve().parent.parent


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def round_trip(tmp: Path, old: Path, new: Path, **kw) -> tuple[Path, dict]:
    patch = tmp / "p.patch"
    info = generate(old, new, patch, **kw)
    assert info.size == patch.stat().st_size
    assert info.sha256 == sha(patch)
    out = tmp / "out.zip"
    header = apply(old, patch, out, expected_target_sha256=sha(new), max_target_size=new.stat().st_size)
    assert out.read_bytes() == new.read_bytes()
    assert header.target_sha256 == sha(new) and header.source_sha256 == sha(old)
    return patch, info.stats


def pair(tmp: Path, old: list[Member], new: list[Member], **kw) -> tuple[Path, Path]:
    return write_zip(tmp / "old.zip", old, **kw), write_zip(tmp / "new.zip", new, **kw)


# -- round trips ---------------------------------------------------------------------

@pytest.mark.parametrize("share", [0.01, 0.1, 0.5])
def test_synthetic_app_round_trip(tmp_path, share):
    old = app_members(seed=1, entries=100)
    a, b = pair(tmp_path, old, evolve(old, share, seed=2))
    patch, stats = round_trip(tmp_path, a, b)
    assert stats["copied"] > 0 and stats["diffed"] + stats["carried"] >= 1
    if share <= 0.1:
        assert patch.stat().st_size < b.stat().st_size * 0.35


def test_changed_code_and_text_cost_a_fraction_of_their_size(tmp_path):
    rnd = random.Random(3)
    old = [Member(f"src/{i}.js", code(rnd, 30_000)) for i in range(20)] + \
          [Member(f"res/{i}.json", text(rnd, 20_000)) for i in range(10)]
    new = [Member(m.name, m.data.replace(b"return", b"return  ", 2)) for m in old]
    a, b = pair(tmp_path, old, new)
    patch, stats = round_trip(tmp_path, a, b)
    assert stats["diffed"] == 30 and stats["carried"] == 0
    # Every deflate stream changed, yet the patch carries only the edits.
    assert patch.stat().st_size < b.stat().st_size / 20


def test_stored_deflated_levels_added_removed_renamed(tmp_path):
    rnd = random.Random(4)
    shared = code(rnd, 50_000)
    old = [Member("keep.txt", b"same\n" * 100), Member("stored.bin", media(rnd, 30_000), STORED),
           Member("level1.js", shared, level=1), Member("level9.js", shared[::-1], level=9),
           Member("gone.txt", b"removed"), Member("lib-1.0.dist-info/METADATA", text(rnd, 5_000)),
           Member("empty", b"")]
    new = [Member("keep.txt", b"same\n" * 100),
           Member("stored.bin", old[1].data[:10_000] + b"patched" + old[1].data[10_000:], STORED),
           Member("level1.js", shared + b"\n// more", level=1),
           Member("level9.js", b"// first\n" + shared[::-1], level=9),
           Member("lib-1.1.dist-info/METADATA", old[5].data.replace(b"{", b"{ ", 3)),
           Member("moved/keep-copy.txt", b"same\n" * 100),
           Member("added.json", text(rnd, 4_000)), Member("empty", b"")]
    a, b = pair(tmp_path, old, new)
    patch, stats = round_trip(tmp_path, a, b)
    assert stats["new"] == 1  # only added.json had no base
    assert patch.stat().st_size < 3_000


def test_data_descriptors_and_zip64(tmp_path):
    old = app_members(seed=5, entries=20)
    new = evolve(old, 0.3, seed=6)
    for kw in ({"descriptors": True}, {"force_zip64": True}):
        a, b = pair(tmp_path, old, new, **kw)
        round_trip(tmp_path, a, b)


def test_entries_another_deflater_made_are_carried_exactly(tmp_path):
    rnd = random.Random(7)
    data = code(rnd, 60_000)
    old = [Member("a.js", data), Member("b.js", data[:30_000])]
    new = [Member("a.js", data + b"\nmore()", raw=foreign_deflate(data + b"\nmore()")),
           Member("b.js", data[:30_000] + b"x")]
    a, b = pair(tmp_path, old, new)
    _, stats = round_trip(tmp_path, a, b)
    assert stats["carried"] == 1 and stats["diffed"] == 1


@pytest.mark.parametrize("level,mem_level,strategy", [
    (1, 8, 0), (3, 9, 0), (5, 8, 1), (6, 8, 0), (7, 9, 4), (9, 8, 0), (9, 9, 1), (6, 8, 2), (6, 9, 3)])
def test_deflate_search_finds_parameters_that_recreate_the_bytes(level, mem_level, strategy):
    rnd = random.Random(level * 100 + mem_level * 10 + strategy)
    content = code(rnd, 150_000) + media(rnd, 20_000) + text(rnd, 60_000)
    made = DeflateParams(level, mem_level, strategy, 15).compressor()
    compressed = made.compress(content) + made.flush()
    found = detect(content, compressed)
    assert found is not None
    again = found.compressor()
    assert again.compress(content) + again.flush() == compressed
    if strategy in (0, 1):
        assert found.level == level
    # The archive's previous match is tried first: one trial suffices.
    assert detect(content, compressed, hint=found, max_tries=1) == found
    if (level, mem_level, strategy) != (6, 8, 0):
        # The search is bounded: one trial without the hint is zlib's default only.
        assert detect(content, compressed, max_tries=1) is None


def test_foreign_deflate_is_not_recreated():
    rnd = random.Random(19)
    content = code(rnd, 50_000)
    assert detect(content, foreign_deflate(content)) is None


def test_identical_packages_make_one_copy(tmp_path):
    a = write_zip(tmp_path / "a.zip", app_members(seed=8, entries=30))
    patch, stats = round_trip(tmp_path, a, a)
    assert patch.stat().st_size < spec.HEADER_SIZE + spec.TRAILER_SIZE + 32
    assert stats["copied"] == 30 + 1


def test_binary_entries_use_bsdiff(tmp_path):
    rnd = random.Random(9)
    # Code-like binary: records whose embedded offsets all shift on an insert.
    blob = b"".join(b"\x00\xe8" + (i * 40).to_bytes(4, "little") + rnd.randbytes(10) for i in range(20_000))
    shifted = b"".join(b"\x00\xe8" + (i * 40 + 16).to_bytes(4, "little") + blob[i * 16 + 6:i * 16 + 16]
                       for i in range(20_000))
    a, b = pair(tmp_path, [Member("lib.so", blob)], [Member("lib.so", b"\x90" * 16 + shifted)])
    with_bsdiff, stats = round_trip(tmp_path, a, b)
    assert stats["chunks_bsdiff"] == 1
    size = with_bsdiff.stat().st_size
    _, stats = round_trip(tmp_path, a, b, bsdiff=False)
    assert stats["chunks_bsdiff"] == 0
    assert (tmp_path / "p.patch").stat().st_size > size


def _code_like(rnd: random.Random, records: int, shift: int = 0) -> bytes:
    """Compiled-code-like bytes: records whose embedded offsets all move by `shift`."""
    body = [rnd.randbytes(10) for _ in range(records)]
    return b"".join(b"\x00\xe8" + (i * 40 + shift).to_bytes(4, "little") + r for i, r in enumerate(body))


def test_bsdiff_chunk_that_starts_inside_its_window(tmp_path):
    # bsdiff matches the new content's first byte further into the old one
    # (a leading seek, which the format has no record for).
    rnd = random.Random(18)
    blob = _code_like(rnd, 20_000)
    shifted = _code_like(random.Random(18), 20_000, shift=16)
    a, b = pair(tmp_path, [Member("lib.so", rnd.randbytes(3_000) + blob)], [Member("lib.so", shifted)])
    patch, stats = round_trip(tmp_path, a, b)
    assert stats["chunks_bsdiff"] == 1
    assert patch.stat().st_size < 20_000


def test_bsdiff_is_tried_per_chunk_below_its_size_limit(tmp_path):
    # A small and a large library in one package: bsdiff for the chunk whose
    # window and content fit the limit, zstd with the old content as prefix
    # for the other; both re-created byte for byte.
    small, large = _code_like(random.Random(20), 2_000), _code_like(random.Random(21), 20_000)
    small2, large2 = _code_like(random.Random(20), 2_000, 16), _code_like(random.Random(21), 20_000, 16)
    a, b = pair(tmp_path, [Member("small.so", small), Member("large.so", large)],
                [Member("small.so", small2), Member("large.so", large2)])
    limit = 2 * len(small) + 1_000
    assert len(large) + len(large2) > limit
    patch, stats = round_trip(tmp_path, a, b, bsdiff_limit=limit)
    assert stats["diffed"] == 2 and stats["chunks_bsdiff"] == 1 and stats["chunks_zstd"] == 1
    zstd_only = patch.stat().st_size
    patch, stats = round_trip(tmp_path, a, b)
    assert stats["chunks_bsdiff"] == 2
    assert patch.stat().st_size < zstd_only


def test_large_binary_in_windows_uses_bsdiff_per_window(tmp_path):
    old = _code_like(random.Random(22), 20_000)
    new = b"\x90" * 16 + _code_like(random.Random(22), 20_000, 16)
    a, b = pair(tmp_path, [Member("lib.so", old)], [Member("lib.so", new)])
    # Every chunk but the first starts inside its window (bsdiff's leading seek).
    patch, stats = round_trip(tmp_path, a, b, window=64 * 1024)
    assert stats["chunks_bsdiff"] == stats["chunks_zstd"] + stats["chunks_bsdiff"] > 8
    with_bsdiff = patch.stat().st_size
    patch, stats = round_trip(tmp_path, a, b, window=64 * 1024, bsdiff=False)
    assert with_bsdiff < patch.stat().st_size / 4


def test_a_library_renamed_with_a_new_hash_is_diffed_against_the_old_one(tmp_path):
    # auditwheel names bundled libraries libNAME-<hash>.so.<version>, a new
    # hash each build.
    rnd = random.Random(23)
    lib, other = _code_like(rnd, 10_000), code(rnd, 40_000)
    a, b = pair(tmp_path, [Member("pkg.libs/libjpeg-77ae51ab.so.62.4.0", lib), Member("pkg/x.py", other)],
                [Member("pkg.libs/libjpeg-45e70d75.so.62.4.1", lib[:50_000] + b"v2" + lib[50_000:]),
                 Member("pkg/x.py", other)])
    patch, stats = round_trip(tmp_path, a, b)
    assert stats["diffed"] == 1 and stats["new"] == 0
    assert patch.stat().st_size < 5_000


def test_large_entries_are_diffed_in_windows(tmp_path):
    rnd = random.Random(10)
    big = code(rnd, 300_000)
    blob = media(rnd, 200_000)
    old = [Member("big.js", big), Member("blob.bin", blob, STORED)]
    new = [Member("big.js", big[:150_000] + b"inserted()\n" + big[150_000:]),
           Member("blob.bin", blob[:50_000] + b"x" + blob[50_001:], STORED)]
    a, b = pair(tmp_path, old, new)
    patch, stats = round_trip(tmp_path, a, b, window=64 * 1024)
    assert stats["chunks_zstd"] + stats["chunks_bsdiff"] > 8
    assert read_header(patch).max_window == 64 * 1024
    assert patch.stat().st_size < 60_000


def test_apply_takes_file_objects(tmp_path):
    old = app_members(seed=11, entries=30)
    a, b = pair(tmp_path, old, evolve(old, 0.2, seed=12))
    patch = tmp_path / "p.patch"
    generate(a, b, patch)
    out = io.BytesIO()
    with open(a, "rb") as src:
        apply(src, io.BytesIO(patch.read_bytes()), out)
    assert out.getvalue() == b.read_bytes()

    class Pipe(io.RawIOBase):  # the patch is read at two places: a pipe will not do
        def readable(self):
            return True

        def readinto(self, buf):
            return 0

    with pytest.raises(ValueError, match="seekable"):
        apply(a, io.BufferedReader(Pipe()), io.BytesIO())


# -- real packages nobody here made ---------------------------------------------------

WHEELS = [("click", ["8.1.6", "8.1.7"]), ("requests", ["2.32.2", "2.32.3"]),
          ("psutil", ["6.1.0", "6.1.1"]), ("charset-normalizer", ["3.3.1", "3.3.2"])]


@pytest.fixture(scope="module")
def wheels() -> dict[str, list[Path]]:
    cache = Path(os.environ.get("MOSIS_WHEEL_CACHE", ROOT / ".pytest_cache" / "wheels"))
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, versions in WHEELS:
        out[name] = [_fetch(cache, name, v) for v in versions]
    return out


def _fetch(cache: Path, name: str, version: str) -> Path:
    prefix = f"{name.replace('-', '_')}-{version}-"
    found = [p for p in cache.glob("*.whl") if p.name.lower().startswith(prefix.lower())]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary=:all:", "--disable-pip-version-check", "-d", str(cache),
                        f"{name}=={version}"], check=True, timeout=300)
        found = [p for p in cache.glob("*.whl") if p.name.lower().startswith(prefix.lower())]
    assert found, f"pip did not fetch {name} {version}"
    return found[0]


@pytest.mark.parametrize("name", [n for n, _ in WHEELS])
def test_real_wheels_round_trip(tmp_path, wheels, name):
    old, new = wheels[name]
    patch, stats = round_trip(tmp_path, old, new)
    assert stats["carried"] == 0  # zipfile wrote them: every deflate stream re-created
    assert patch.stat().st_size < new.stat().st_size * 0.35


# -- hostile inputs -------------------------------------------------------------------

@pytest.fixture()
def made(tmp_path):
    old = app_members(seed=13, entries=25)
    a, b = pair(tmp_path, old, evolve(old, 0.3, seed=14))
    patch = tmp_path / "p.patch"
    generate(a, b, patch)
    return a, b, patch


def refused(code: Reason, source, patch, tmp_path, **kw) -> DeltaError:
    out = tmp_path / "refused.zip"
    with pytest.raises(DeltaError) as e:
        apply(source, patch, out, **kw)
    assert e.value.code == code, e.value
    assert not out.exists()  # what it wrote is gone
    return e.value


def test_wrong_source_is_refused(made, tmp_path):
    a, b, patch = made
    refused(Reason.SOURCE_MISMATCH, b, patch, tmp_path)
    other = tmp_path / "other.zip"
    other.write_bytes(a.read_bytes()[:-1] + b"\x01")
    refused(Reason.SOURCE_MISMATCH, other, patch, tmp_path)


def test_a_source_that_is_not_a_zip(made, tmp_path):
    a, b, patch = made
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a zip at all" * 100)
    for args in ((junk, b), (a, junk)):
        with pytest.raises(DeltaError) as e:
            generate(*args, tmp_path / "x.patch")
        assert e.value.code == Reason.NOT_A_ZIP
    refused(Reason.SOURCE_MISMATCH, junk, patch, tmp_path)


def test_truncated_patches_are_refused(made, tmp_path):
    a, _, patch = made
    data = patch.read_bytes()
    cut = tmp_path / "cut.patch"
    for n in sorted({0, 7, 60, spec.HEADER_SIZE, spec.HEADER_SIZE + 5, len(data) // 2, len(data) - 33,
                     len(data) - 1}):
        cut.write_bytes(data[:n])
        want = Reason.NOT_A_PATCH if n < 8 else Reason.PATCH_TRUNCATED
        refused(want, a, cut, tmp_path)


def test_bit_flips_are_refused(made, tmp_path):
    a, _, patch = made
    data = patch.read_bytes()
    flipped = tmp_path / "flip.patch"
    rnd = random.Random(15)
    for pos in [0, 9, 30, 100, spec.HEADER_SIZE] + rnd.sample(range(spec.HEADER_SIZE, len(data)), 40):
        bad = bytearray(data)
        bad[pos] ^= 1 << rnd.randrange(8)
        flipped.write_bytes(bytes(bad))
        out = tmp_path / "o.zip"
        with pytest.raises(DeltaError) as e:
            apply(a, flipped, out)
        assert e.value.code in (Reason.PATCH_CORRUPT, Reason.NOT_A_PATCH, Reason.UNSUPPORTED_VERSION,
                                Reason.PATCH_TRUNCATED, Reason.SOURCE_MISMATCH, Reason.TOO_LARGE), e.value
        assert not out.exists()


def reseal(data: bytes) -> bytes:
    """A patch whose digest matches its (altered) content: what a hostile
    or buggy maker could send; the checks inside must still hold."""
    body = bytearray(data[:-spec.TRAILER_SIZE])
    body[16:24] = len(data).to_bytes(8, "little")  # the header's patch_size
    return bytes(body) + hashlib.sha256(body).digest()


def with_header(data: bytes, **changes) -> bytes:
    header = spec.PatchHeader.unpack(data[:spec.HEADER_SIZE])
    return reseal(spec.PatchHeader(**{**header.__dict__, **changes}).pack() + data[spec.HEADER_SIZE:])


def test_huge_claimed_output_is_refused_before_writing(made, tmp_path):
    a, b, patch = made
    data = patch.read_bytes()
    huge = tmp_path / "huge.patch"
    huge.write_bytes(with_header(data, target_size=1 << 40))
    refused(Reason.TOO_LARGE, a, huge, tmp_path, max_target_size=b.stat().st_size)
    refused(Reason.TARGET_MISMATCH, a, patch, tmp_path, expected_target_sha256="0" * 64)
    # Operations that would write past the declared size: refused before the write.
    small = tmp_path / "small.patch"
    limit = b.stat().st_size // 3
    small.write_bytes(with_header(data, target_size=limit))
    out = io.BytesIO()
    with pytest.raises(DeltaError) as e:
        apply(a, small, out)
    assert e.value.code == Reason.OUTPUT_OVERFLOW
    assert len(out.getvalue()) <= limit


def test_a_window_larger_than_allowed_is_refused(made, tmp_path):
    a, _, patch = made
    refused(Reason.TOO_LARGE, a, patch, tmp_path, max_window=1024)


def test_not_a_patch_and_unknown_versions(made, tmp_path):
    a, _, patch = made
    data = patch.read_bytes()
    other = tmp_path / "other.patch"
    other.write_bytes(b"PK\x03\x04" + data[4:])
    refused(Reason.NOT_A_PATCH, a, other, tmp_path)
    other.write_bytes(reseal(data[:8] + b"\x02\x00" + data[10:]))
    refused(Reason.UNSUPPORTED_VERSION, a, other, tmp_path)
    other.write_bytes(data + b"\x00")
    refused(Reason.PATCH_CORRUPT, a, other, tmp_path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
                min_size=1, max_size=4))
def test_resealed_damage_never_escapes_the_checks(made, tmp_path, flips):
    """Damage the digest cannot catch (re-sealed) is still refused with a
    reason, never crashes another way, never writes past the target."""
    a, b, patch = made
    data = bytearray(patch.read_bytes())
    for pos, mask in flips:
        data[spec.HEADER_SIZE + pos % (len(data) - spec.HEADER_SIZE - spec.TRAILER_SIZE)] ^= mask
    out = io.BytesIO()
    try:
        apply(a, io.BytesIO(reseal(bytes(data))), out)
    except DeltaError:
        pass
    else:  # a harmless flip (an unused bit) must still give the exact target
        assert out.getvalue() == b.read_bytes()
    assert len(out.getvalue()) <= b.stat().st_size


def test_a_zlib_that_does_not_reproduce_is_named(made, tmp_path, monkeypatch):
    a, _, patch = made
    from mosis_format.delta import deflate

    # Another deflate implementation, as on a device whose zlib differs.
    monkeypatch.setattr(deflate.DeflateParams, "compressor",
                        lambda self: zlib.compressobj(1 if self.level != 1 else 9, zlib.DEFLATED, -15))
    refused(Reason.DEFLATE_MISMATCH, a, patch, tmp_path)


def test_verify_and_the_signed_message(made):
    _, b, patch = made
    header = verify(patch)
    assert header.target_sha256 == sha(b)
    message = signed_message("com.example.notes", 41, "a" * 64, 42, "b" * 64, "c" * 64, 1234)
    assert message == (b"mosis-delta-v1\ncom.example.notes\n41\n" + b"a" * 64 + b"\n42\n" + b"b" * 64
                       + b"\n" + b"c" * 64 + b"\n1234")


# -- bounded memory -------------------------------------------------------------------

def test_apply_memory_does_not_grow_with_the_package(tmp_path):
    """A 64 MiB package whose 48 MiB entry changed, applied in a fresh
    process: its peak RSS stays far below the package's size."""
    rnd = random.Random(16)
    blob = media(rnd, 48 * 1024 * 1024)
    rest = [Member(f"m{i}.bin", media(rnd, 1024 * 1024), STORED) for i in range(16)]
    old = [Member("big.bin", blob, STORED)] + rest
    new = [Member("big.bin", blob[:1000] + b"edit" + blob[1000:30_000_000] + blob[30_000_100:], STORED)] + rest
    a, b = pair(tmp_path, old, new)
    patch = tmp_path / "p.patch"
    generate(a, b, patch)
    assert patch.stat().st_size < 64 * 1024  # the windows found the moved bytes
    out = tmp_path / "out.zip"
    # VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec.
    probe = ("import re, sys; from mosis_format.delta import apply; apply(*sys.argv[1:4]); "
             "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
    peak_kib = int(subprocess.run([sys.executable, "-c", probe, str(a), str(patch), str(out)],
                                  capture_output=True, text=True, check=True).stdout)
    assert sha(out) == sha(b)
    assert peak_kib < 100 * 1024, f"peak RSS {peak_kib} KiB"


# -- the test vectors for device implementers -----------------------------------------

def test_vectors_apply_and_are_what_their_seeds_make(tmp_path):
    from tests.delta_vectors import CASES, VECTORS, build

    index = json.loads((VECTORS / "index.json").read_text())
    assert [v["name"] for v in index["vectors"]] == [c.name for c in CASES]
    stats = {}
    for vector, entry in zip(CASES, index["vectors"]):
        for role in ("source", "target", "patch"):
            path = VECTORS / entry[role]["file"]
            assert path.stat().st_size == entry[role]["size"] and sha(path) == entry[role]["sha256"], path
        folder = VECTORS / vector.name
        out = tmp_path / f"{vector.name}.zip"
        apply(folder / "source.zip", folder / "patch.bin", out)
        assert sha(out) == entry["target"]["sha256"]
        # The packages are rebuilt byte for byte from their seeds, and this
        # generator's patch between them works too.
        source, target = build(vector, tmp_path / vector.name)
        assert source.read_bytes() == (folder / "source.zip").read_bytes()
        assert target.read_bytes() == (folder / "target.zip").read_bytes()
        fresh = tmp_path / f"{vector.name}.patch"
        stats[vector.name] = generate(source, target, fresh,
                                      **({"window": vector.window} if vector.window else {})).stats
        apply(source, fresh, out)
        assert sha(out) == entry["target"]["sha256"]
    # Each vector still exercises the part of the format it is there for.
    assert stats["identical"]["copied"] == 2 and stats["identical"]["literal_bytes"] == 0
    assert stats["bsdiff"]["chunks_bsdiff"] == 1
    assert stats["carried"]["carried"] == 1
    assert stats["windows"]["chunks_zstd"] > 1
    assert stats["stored-added-removed"]["new"] == 1


def test_content_moved_to_another_name_is_copied(tmp_path):
    rnd = random.Random(17)
    x, y = code(rnd, 20_000), text(rnd, 20_000)
    a, b = pair(tmp_path, [Member("a.js", x), Member("b.json", y)],
                [Member("a.js", code(rnd, 20_000)), Member("b.json", x)])
    _, stats = round_trip(tmp_path, a, b)
    assert stats["copied"] == 1  # b.json's data is old a.js's, copied rather than diffed
