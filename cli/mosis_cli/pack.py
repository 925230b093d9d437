"""Building `.mosis` packages from a folder, and checking packages locally.

Both run the appliance's own validator (mosis_format.validation) over the package's
bytes, so the tool refuses exactly what the store would refuse, with the
same reason codes, before anything is uploaded. The store's limits are the
defaults; a store configured tighter may still refuse what passes here.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mosis_cli.errors import CliError, Exit
from mosis_format.validation import (
    MANIFEST_NAME,
    Expected,
    PackageInvalid,
    PackageLimits,
    Report,
    parse_manifest,
    validate_package,
)

# Never packed: version-control metadata and desktop litter.
SKIPPED_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__"})
SKIPPED_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
# A fixed timestamp makes packing reproducible: the same folder always
# gives the same bytes and so the same sha256.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
READ_CHUNK = 1024 * 1024


VALIDATION_HINT = "what each reason code means and what to do: mosis help validation"
PACKAGING_HINT = "what a package may hold: mosis help packaging"


def invalid(e: PackageInvalid, where: str) -> CliError:
    return CliError(Exit.INVALID, f"{where}: {e.message}", code=e.code, hint=VALIDATION_HINT)


@dataclass(frozen=True)
class Checked:
    path: Path
    size: int
    sha256: str
    manifest: dict
    entries: int
    unpacked_size: int

    @classmethod
    def of(cls, path: Path, report: Report) -> "Checked":
        return cls(path, report.size, report.sha256, report.manifest, report.entries,
                   report.unpacked_size)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "package_id": self.manifest["package_id"],
                "version_code": self.manifest["version_code"],
                "version_name": self.manifest["version_name"], "size": self.size,
                "sha256": self.sha256, "entries": self.entries, "unpacked_size": self.unpacked_size}


def _peek_manifest(path: Path) -> dict | None:
    """The manifest as a lenient ZIP reader sees it (the validator decides)."""
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read(MANIFEST_NAME))
    except Exception:  # anything wrong here, the validator names precisely
        return None


def check_package(path: Path, limits: PackageLimits | None = None, label: str | None = None) -> Checked:
    """Validate a `.mosis` file as the store will; raise CliError(INVALID)."""
    limits = limits or PackageLimits()
    size = path.stat().st_size
    peek = _peek_manifest(path)
    ok = isinstance(peek, dict) and isinstance(peek.get("package_id"), str) \
        and isinstance(peek.get("version_code"), int)
    # The manifest names what the package claims to be; the validator checks
    # every byte against it (without it, it fails before the comparison).
    expected = Expected(peek["package_id"] if ok else "", peek["version_code"] if ok else 0, size)
    with open(path, "rb") as ranges, open(path, "rb") as stream:
        def read_range(offset: int, length: int) -> bytes:
            ranges.seek(offset)
            return ranges.read(length)

        try:
            report = validate_package(size, read_range, iter(lambda: stream.read(READ_CHUNK), b""),
                                      expected, limits)
        except PackageInvalid as e:
            raise invalid(e, label or str(path)) from None
    return Checked.of(path, report)


def file_digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(READ_CHUNK), b""):
            h.update(chunk)
    return path.stat().st_size, h.hexdigest()


def read_package_unchecked(path: Path) -> Checked:
    """Size, sha256 and manifest without validating (`upload --no-check`)."""
    manifest = _peek_manifest(path)
    if not isinstance(manifest, dict) or not {"package_id", "version_code", "version_name"} <= set(manifest):
        raise CliError(Exit.INVALID, f"{path}: cannot read the package_id, version_code and "
                       f"version_name from its {MANIFEST_NAME}", code="manifest_invalid",
                       hint=PACKAGING_HINT)
    size, digest = file_digest(path)
    return Checked(path, size, digest, manifest, 0, 0)


# -- packing ------------------------------------------------------------------------

def _files(src: Path, skip: Path | None) -> list[tuple[str, Path]]:
    """(archive name, path) of every file under src, sorted; links refused."""
    found = []
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        here = Path(dirpath)
        for d in list(dirnames):
            if (here / d).is_symlink():
                raise CliError(Exit.INVALID, f"{here / d} is a symbolic link; packages may hold only "
                               "regular files and directories", code="symlink",
                               hint=PACKAGING_HINT)
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for name in sorted(filenames):
            path = here / name
            if name in SKIPPED_FILES or (skip is not None and path == skip):
                continue
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise CliError(Exit.INVALID, f"{path} is a symbolic link; packages may hold only "
                               "regular files and directories", code="symlink",
                               hint=PACKAGING_HINT)
            if not stat.S_ISREG(mode):
                raise CliError(Exit.INVALID, f"{path} is not a regular file", code="unsafe_path",
                               hint=PACKAGING_HINT)
            found.append((path.relative_to(src).as_posix(), path))
    return found


def _add(z: zipfile.ZipFile, name: str, path: Path) -> None:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.create_system = 3  # Unix, so the mode below is read as such
    executable = path.stat().st_mode & 0o111
    info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    info.file_size = path.stat().st_size  # decides ZIP64 up front
    with open(path, "rb") as src, z.open(info, "w") as dst:
        for chunk in iter(lambda: src.read(READ_CHUNK), b""):
            dst.write(chunk)


def pack(src: Path, out: Path | None = None, limits: PackageLimits | None = None) -> Checked:
    """Zip `src` (with manifest.json at its root) into a checked `.mosis`."""
    limits = limits or PackageLimits()
    if not src.is_dir():
        raise CliError(Exit.USAGE, f"{src} is not a directory", code="not_a_directory")
    manifest_path = src / MANIFEST_NAME
    if not manifest_path.is_file() or manifest_path.is_symlink():
        raise CliError(Exit.INVALID, f"{src} has no {MANIFEST_NAME} at its top", code="manifest_missing",
                       hint='write one like {"package_id": "com.example.notes", "version_code": 1, '
                            '"version_name": "1.0", "name": "Notes"}; see: mosis help packaging')
    try:
        manifest = parse_manifest(manifest_path.read_bytes(), limits)
    except PackageInvalid as e:
        raise invalid(e, str(src)) from None
    out = out or Path(f"{manifest['package_id']}-{manifest['version_code']}.mosis")
    if out.is_dir():
        out = out / f"{manifest['package_id']}-{manifest['version_code']}.mosis"
    out = out.resolve()
    files = _files(src.resolve(), skip=out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w") as z:
            _add(z, MANIFEST_NAME, manifest_path)  # first, where readers look for it
            for name, path in files:
                if name != MANIFEST_NAME:
                    _add(z, name, path)
        checked = check_package(tmp, limits, label=f"the package built from {src}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return Checked(out, checked.size, checked.sha256, checked.manifest, checked.entries,
                   checked.unpacked_size)
