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


def test_the_replica_is_off_unless_an_endpoint_is_set_and_deletes_wait_the_documented_delay():
    assert not Settings.from_env({}).replica_configured
    assert str(Settings().replica_delete_delay) in row("MOSIS_REPLICA_DELETE_DELAY_SECONDS")
    s = Settings.from_env({"MOSIS_REPLICA_S3_ENDPOINT": "https://s3.example.test/", "MOSIS_REPLICA_S3_BUCKET": "off",
                           "MOSIS_REPLICA_DELETE_DELAY_SECONDS": "0"})
    assert s.replica_configured and s.replica_delete_delay == 0
    replica = s.replica_storage_settings()
    assert (replica.s3_endpoint, replica.bucket) == ("https://s3.example.test", "off")
    with pytest.raises(ConfigError):
        Settings.from_env({"MOSIS_REPLICA_S3_SECRET_KEY": "change-me"})
