"""Delta patches between two versions of a package (docs/deltas.md).

Applying needs only this package (and zstd):

    from mosis_format.delta import apply, DeltaError, Reason
    header = apply("old.mosis", "old-new.patch", "new.mosis",
                   expected_target_sha256=sha, max_target_size=size)

Making one needs the `generate` extra:

    from mosis_format.delta.generator import generate
    info = generate("old.mosis", "new.mosis", "old-new.patch")  # PatchInfo(size, sha256, header, stats)

Every failure is a `DeltaError` whose `code` is a `Reason`.
"""

from .applier import DEFAULT_MAX_WINDOW, apply, read_header, verify
from .spec import ALGORITHM, DeltaError, PatchHeader, Reason, signed_message

__all__ = ["ALGORITHM", "DEFAULT_MAX_WINDOW", "DeltaError", "PatchHeader", "Reason", "apply",
           "read_header", "signed_message", "verify"]
