"""The delta format's test vectors for device implementers
(format/vectors/deltas/): small source/target/patch triples, each made to
exercise one part of the format, and an index with their sha256s.

    .venv/bin/python -m tests.delta_vectors   # rewrites the vectors

The sources and targets are rebuilt byte for byte from the seeds below
(tests/test_delta_codec.py checks that); the committed patches are what
this generator made when they were written, and stay valid as long as the
format does, whatever later generators choose.
"""

from __future__ import annotations

import hashlib
import json
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mosis_format.delta import ALGORITHM
from mosis_format.delta.generator import generate
from tests.delta_packages import STORED, Member, code, foreign_deflate, media, text, write_zip

VECTORS = Path(__file__).resolve().parent.parent / "format" / "vectors" / "deltas"


@dataclass
class Vector:
    name: str
    description: str
    members: Callable[[], tuple[list[Member], list[Member]]]
    zip_options: dict = field(default_factory=dict)
    window: int | None = None


def _identical():
    m = [Member("manifest.json", b'{"version_code": 1}'), Member("a.txt", b"hello\n" * 50)]
    return m, m


def _text_edits():
    rnd = random.Random(1)
    src = code(rnd, 6_000)
    strings = text(rnd, 3_000)
    old = [Member("manifest.json", b'{"version_code": 1}'), Member("src/main.js", src),
           Member("res/strings.json", strings), Member("app-1.dist-info/RECORD", b"src/main.js,1\n")]
    new = [Member("manifest.json", b'{"version_code": 2}'),
           Member("src/main.js", src.replace(b"return", b"return /*2*/", 3)),
           Member("res/strings.json", strings[:1000] + b'"added": "new string",\n' + strings[1000:]),
           Member("app-2.dist-info/RECORD", b"src/main.js,2\n")]
    return old, new


def _stored_added_removed():
    rnd = random.Random(2)
    blob = media(rnd, 4_000)
    old = [Member("keep.txt", b"unchanged\n" * 20), Member("image.bin", blob, STORED),
           Member("removed.txt", b"gone in the next version")]
    new = [Member("keep.txt", b"unchanged\n" * 20),
           Member("image.bin", blob[:2_000] + b"EDIT" + blob[2_004:], STORED),
           Member("added.txt", text(rnd, 800))]
    return old, new


def _levels():
    rnd = random.Random(3)
    src = code(rnd, 5_000)
    old = [Member("fast.js", src, level=1), Member("best.js", src[::-1], level=9), Member("empty", b"")]
    new = [Member("fast.js", src + b"\nfast()", level=1), Member("best.js", b"best()\n" + src[::-1], level=9),
           Member("empty", b"")]
    return old, new


def _bsdiff():
    rnd = random.Random(4)
    records = [rnd.randbytes(10) for _ in range(600)]
    old = b"".join(b"\x00\xe8" + (i * 16).to_bytes(4, "little") + r for i, r in enumerate(records))
    new = b"\x90" * 16 + b"".join(b"\x00\xe8" + (i * 16 + 16).to_bytes(4, "little") + r
                                  for i, r in enumerate(records))
    return [Member("lib/native.so", old)], [Member("lib/native.so", new)]


def _carried():
    rnd = random.Random(5)
    src = code(rnd, 4_000)
    changed = src + b"\nmore()"
    return ([Member("other-deflater.js", src, raw=foreign_deflate(src))],
            [Member("other-deflater.js", changed, raw=foreign_deflate(changed))])


def _windows():
    rnd = random.Random(6)
    src = code(rnd, 20_000)
    return ([Member("big.js", src)],
            [Member("big.js", src[:3_000] + b"/* early */" + src[3_000:15_000] + b"/* late */" + src[15_000:])])


def _descriptors_zip64():
    old, new = _text_edits()
    return old, new


CASES = [
    Vector("identical", "the same package: one COPY of the whole source", _identical),
    Vector("text-edits", "deflated code and text edited, a renamed folder: ENTRY with zstd chunks, "
           "deflate level 6 re-created; headers and central directory as LITERALs", _text_edits),
    Vector("stored-added-removed", "a stored entry edited, one added (no base), one removed", _stored_added_removed),
    Vector("levels", "deflate levels 1 and 9 re-created; an empty entry", _levels),
    Vector("bsdiff", "a binary whose embedded offsets all moved: a bsdiff chunk", _bsdiff),
    Vector("carried", "an entry another deflater made (1 KiB window): its compressed bytes coded "
           "against the old compressed bytes, written as they are", _carried),
    Vector("windows", "one entry in several chunks with a 4 KiB window: windows move forward", _windows,
           window=4096),
    Vector("descriptors-zip64", "entries with data descriptors and ZIP64 extra fields", _descriptors_zip64,
           zip_options={"descriptors": True, "force_zip64": True}),
]


def build(vector: Vector, folder: Path) -> tuple[Path, Path]:
    """Write the vector's source and target packages into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    old, new = vector.members()
    return (write_zip(folder / "source.zip", old, **vector.zip_options),
            write_zip(folder / "target.zip", new, **vector.zip_options))


def _file(path: Path) -> dict:
    data = path.read_bytes()
    return {"file": f"{path.parent.name}/{path.name}", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write(root: Path = VECTORS) -> dict:
    entries = []
    for vector in CASES:
        source, target = build(vector, root / vector.name)
        info = generate(source, target, root / vector.name / "patch.bin",
                        **({"window": vector.window} if vector.window else {}))
        entries.append({"name": vector.name, "description": vector.description,
                        "source": _file(source), "target": _file(target),
                        "patch": _file(root / vector.name / "patch.bin"), "stats": info.stats})
    index = {"format": ALGORITHM, "made_with_zlib": zlib.ZLIB_RUNTIME_VERSION,
             "about": "Apply patch to source; the result must be target, byte for byte (same sha256). "
                      "See docs/deltas.md.",
             "vectors": entries}
    (root / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return index


if __name__ == "__main__":
    for v in write()["vectors"]:
        print(f"{v['name']:22} source {v['source']['size']:6} target {v['target']['size']:6} "
              f"patch {v['patch']['size']:6}  {v['stats']}")
