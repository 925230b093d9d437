"""docs/configuration.md states the defaults and limits app/platform/config.py applies."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.platform.config import ConfigError, Settings

DOCS = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()


def row(variable: str) -> str:
    (line,) = [line for line in DOCS.splitlines() if line.startswith(f"| `{variable}` |")]
    return line


def test_the_fixed_s3_secret_default_is_documented_as_local_only():
    line = row("MOSIS_S3_SECRET_KEY")
    assert f"`{Settings().s3_secret_key}`" in line and "compose" in line and "`.env`" in line


def test_the_edge_cache_minimum_is_the_documented_one():
    mib16 = 16 * 1024 * 1024
    assert str(mib16) in row("MOSIS_EDGE_CACHE_MAX_BYTES")
    assert Settings.from_env({"MOSIS_EDGE_CACHE_MAX_BYTES": str(mib16)}).edge_cache_max_bytes == mib16
    with pytest.raises(ConfigError):
        Settings.from_env({"MOSIS_EDGE_CACHE_MAX_BYTES": str(mib16 - 1)})
