"""Every package of the corpus through `validate_package`, read like storage reads it.

The reader hands out ranged reads and a chunked stream of the bytes, as
`Storage.read_range` and `Storage.stream` do; chunk sizes vary so that every
boundary inside headers and descriptors gets crossed.
"""

from __future__ import annotations

import hashlib
import random
import re

import pytest

from app.platform.config import PackageLimits
from mosis_format.validation import Expected, PackageInvalid, validate_package
from tests.corpus import HOSTILE, VALID, Case, pkg

PID, CODE = "com.corpus.app", 7
CONTRACT_CODES = {
    "size_mismatch", "sha256_mismatch", "invalid_zip", "manifest_missing", "manifest_invalid",
    "package_id_mismatch", "version_code_mismatch", "unsafe_path", "symlink", "duplicate_entry",
    "encrypted_entry", "too_many_entries", "too_large_unpacked", "compression_ratio",
    "crc_mismatch", "too_large",
}


class StoredObject:
    """What the validator sees of an object in storage: its size, ranges and a stream."""

    def __init__(self, data: bytes, chunk: int = 64 * 1024):
        self.data = data
        self.chunk = chunk
        self.ranges: list[tuple[int, int]] = []
        self.closed = False
        self.streamed = 0

    def read_range(self, offset: int, length: int) -> bytes:
        self.ranges.append((offset, length))
        return self.data[offset:offset + length]

    def stream(self):
        return _Chunks(self)


class _Chunks:
    """The stream of a StoredObject; like the storage's, it must be closed."""

    def __init__(self, obj: StoredObject):
        self.obj = obj
        self.at = 0

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        if self.obj.closed:
            raise ValueError("read from a closed stream")
        chunk = self.obj.data[self.at:self.at + self.obj.chunk]
        if not chunk:
            raise StopIteration
        self.at += len(chunk)
        self.obj.streamed += len(chunk)
        return chunk

    def close(self) -> None:
        self.obj.closed = True


def validate(case: Case, data: bytes, chunk: int = 64 * 1024, obj: StoredObject | None = None):
    obj = obj or StoredObject(data, chunk)
    expected = Expected(PID, CODE, case.declare_size(data), case.declare_sha256(data))
    return validate_package(len(data), obj.read_range, obj.stream(), expected, case.package_limits())


def test_the_corpus_covers_every_reason_code_of_the_contract():
    assert len(HOSTILE) >= 40
    assert {c.code for c in HOSTILE} == CONTRACT_CODES
    assert len({c.name for c in HOSTILE + VALID}) == len(HOSTILE + VALID)


@pytest.mark.parametrize("case", HOSTILE, ids=lambda c: c.name)
def test_hostile_package_fails_with_its_code(case: Case):
    data = case.build(PID, CODE)
    obj = StoredObject(data)
    with pytest.raises(PackageInvalid) as failure:
        validate(case, data, obj=obj)
    assert failure.value.code == case.code, failure.value.message
    # The message names what is wrong, in a sentence a developer can act on.
    assert case.says in failure.value.message
    assert len(failure.value.message) >= 30 and "Traceback" not in failure.value.message
    # Nothing leaks: the stream is closed whether it was read or not, and
    # limits are enforced before reading more than the object holds.
    assert obj.closed
    assert obj.streamed <= len(data)
    assert all(0 <= off and off + n <= len(data) for off, n in obj.ranges)


@pytest.mark.parametrize("chunk", [7, 4096, 1 << 20])
@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_valid_edge_case_passes(case: Case, chunk: int):
    data = case.build(PID, CODE)
    report = validate(case, data, chunk)
    assert report.sha256 == hashlib.sha256(data).hexdigest()
    assert report.size == len(data)
    assert report.manifest["package_id"] == PID and report.manifest["version_code"] == CODE
    assert report.manifest_bytes.startswith(b"{")


def test_bombs_stop_early_without_inflating_their_payload():
    """A declared-size bomb is refused from the central directory alone.

    Of its body, only what the read-ahead fetched meanwhile is read: never
    more than the read-ahead holds.
    """
    from mosis_format.validation import READ_AHEAD_CHUNKS

    case = next(c for c in HOSTILE if c.name == "bomb_single_entry")
    data = case.build(PID, CODE)
    chunk = 1024
    obj = StoredObject(data, chunk)
    with pytest.raises(PackageInvalid):
        validate(case, data, obj=obj)
    assert obj.streamed <= (READ_AHEAD_CHUNKS + 2) * chunk < len(data)
    assert obj.closed


def test_limits_are_the_configured_ones():
    data = pkg(PID, CODE)
    case = next(c for c in VALID if c.name == "valid_deflated")
    entries = data.count(b"PK\x01\x02")
    tight = PackageLimits(max_entries=entries - 1)
    with pytest.raises(PackageInvalid) as failure:
        validate_package(len(data), StoredObject(data).read_range, StoredObject(data).stream(),
                         Expected(PID, CODE), tight)
    assert failure.value.code == "too_many_entries"
    assert f"the limit is {entries - 1}" in failure.value.message
    assert validate(case, data).entries == entries


def test_damaged_packages_never_crash_the_validator():
    """Random damage to real packages: only PackageInvalid, or a pass, never anything else."""
    rnd = random.Random(20240601)
    seeds = [c for c in VALID if c.name in ("valid_deflated", "valid_data_descriptors",
                                            "valid_zip64_end_records", "valid_nested_archive",
                                            "valid_unicode_names")]
    outcomes = {}
    for case in seeds:
        original = case.build(PID, CODE)
        for _ in range(120):
            data = bytearray(original)
            how = rnd.choice(["flip", "zero", "cut", "insert", "splice"])
            at = rnd.randrange(len(data))
            if how == "flip":
                for _ in range(rnd.randint(1, 4)):
                    data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
            elif how == "zero":
                data[at:at + rnd.randint(1, 8)] = bytes(min(8, len(data) - at))
            elif how == "cut":
                del data[at:at + rnd.randint(1, 64)]
            elif how == "insert":
                data[at:at] = rnd.randbytes(rnd.randint(1, 16))
            else:
                other = rnd.randrange(len(data))
                data[at:at + 4] = data[other:other + 4]
            try:
                validate(case, bytes(data), chunk=rnd.choice([97, 4096, 65536]))
                outcomes["ok"] = outcomes.get("ok", 0) + 1
            except PackageInvalid as e:
                assert e.code in CONTRACT_CODES and e.message
                outcomes[e.code] = outcomes.get(e.code, 0) + 1
    assert outcomes.get("invalid_zip", 0) > 100  # the damage was really noticed


def test_failure_messages_never_echo_control_characters():
    case = next(c for c in HOSTILE if c.name == "path_bidi_override")
    with pytest.raises(PackageInvalid) as failure:
        validate(case, case.build(PID, CODE))
    assert not re.search(r"[\x00-\x1f\u202e]", failure.value.message)
