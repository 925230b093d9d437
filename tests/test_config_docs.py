"""docs/configuration.md is what app/platform/config.py declares: every
setting, its default and bounds, generated from the one declaration of each;
nothing else reads a setting from the environment."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.platform import config
from app.platform.config import ConfigError, Settings, every_var

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "docs" / "configuration.md").read_text()
ROW = re.compile(r"^\| `(MOSIS_[A-Z0-9_]+)` \|", re.M)


def row(variable: str) -> str:
    (line,) = [line for line in DOCS.splitlines() if line.startswith(f"| `{variable}` |")]
    return line


def test_the_tables_are_what_the_declarations_give():
    assert config.markdown(DOCS) == DOCS, "run: python -m app.platform.config --markdown"


def test_the_generator_catches_an_undocumented_or_a_stale_variable(tmp_path):
    stale = DOCS.replace("| `MOSIS_MAX_SCREENSHOTS` |", "| `MOSIS_MAX_SCREENSHOT_COUNT` |")
    undocumented = re.sub(r"^\| `MOSIS_S3_REGION` \|.*\n", "", DOCS, flags=re.M)
    for text in (stale, undocumented):
        assert config.markdown(text) == DOCS
        path = tmp_path / "configuration.md"
        path.write_text(text)
        cmd = [sys.executable, "-m", "app.platform.config", "--markdown", "--file", str(path)]
        check = subprocess.run([*cmd, "--check"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert check.returncode == 1 and "out of date" in check.stderr
        assert subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=60).returncode == 0
        assert path.read_text() == DOCS
    with pytest.raises(ConfigError, match="edge"):
        config.markdown(DOCS.replace("<!-- end settings: edge -->", ""))


def test_every_variable_is_declared_once_and_documented_once():
    names = [var.env for var, _ in every_var()]
    assert len(names) == len(set(names))
    rows = ROW.findall(DOCS)
    # Besides the declared ones, only the developer CLI's own (read by cli/mosis_cli).
    devcli = set(re.findall(r"MOSIS_[A-Z0-9_]*[A-Z0-9]",
                            "".join(p.read_text() for p in (ROOT / "cli" / "mosis_cli").rglob("*.py"))))
    assert devcli, "the CLI reads its settings from the environment too"
    assert sorted(rows) == sorted(names + sorted(devcli))


def test_nothing_but_settings_reads_a_setting_from_the_environment():
    reader = re.compile(r"""(?:environ\.get\(|environ\[|getenv\()\s*["'](MOSIS_[A-Z0-9_]+)""")
    declared = {var.env for var, _ in every_var()}
    found = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        if path.name == "config.py":
            continue
        found += [(path.name, name) for name in reader.findall(path.read_text()) if name in declared]
    assert found == []


def test_declared_bounds_are_what_the_loader_applies():
    for var, default in every_var():
        assert Settings.from_env({var.env: ""}) == Settings(), var.env  # empty: the default
        if var.kind == "int" and var.minimum is not None:
            lowest = int(var.minimum)
            with pytest.raises(ConfigError, match=f"{var.env} must be (at least|between)"):
                Settings.from_env({var.env: str(lowest - 1)})
            if var.maximum is not None:
                with pytest.raises(ConfigError, match=var.env):
                    Settings.from_env({var.env: str(int(var.maximum) + 1)})
        if var.kind in ("int", "float", "seconds"):
            with pytest.raises(ConfigError, match=f"^{var.env} must be an? (integer|number), got 'x'$"):
                Settings.from_env({var.env: "x"})
        for choice in var.choices:
            Settings.from_env({var.env: choice})
        if var.choices:
            with pytest.raises(ConfigError, match=var.env):
                Settings.from_env({var.env: "no-such-choice"})


def test_the_fixed_s3_secret_default_is_documented_as_local_only():
    line = row("MOSIS_S3_SECRET_KEY")
    assert f"`{Settings().s3_secret_key}`" in line and "compose" in line and "`.env`" in line


def test_the_edge_cache_minimum_is_the_documented_one():
    mib16 = 16 * 1024 * 1024
    assert str(mib16) in row("MOSIS_EDGE_CACHE_MAX_BYTES")
    assert Settings.from_env({"MOSIS_EDGE_CACHE_MAX_BYTES": str(mib16)}).edge_cache_max_bytes == mib16
    with pytest.raises(ConfigError):
        Settings.from_env({"MOSIS_EDGE_CACHE_MAX_BYTES": str(mib16 - 1)})


def test_errors_keep_their_wording():
    cases = {
        "MOSIS_S3_RETRIES": ("-1", "MOSIS_S3_RETRIES must be at least 0, got -1"),
        "MOSIS_S3_READ_TIMEOUT_SECONDS": ("0", "MOSIS_S3_READ_TIMEOUT_SECONDS must be at least 0.1 seconds, got 0.0"),
        "MOSIS_ORPHAN_DELETE": ("maybe", "MOSIS_ORPHAN_DELETE must be true or false, got 'maybe'"),
        "MOSIS_SCRUB_SHARE_PER_DAY": ("1.5", "MOSIS_SCRUB_SHARE_PER_DAY must be between 0 and 1, got 1.5"),
        "MOSIS_EDGE_TRUSTED_PROXIES": ("10.0.0.0/8 x", "MOSIS_EDGE_TRUSTED_PROXIES: 'x' is not an IP address or network"),
        "MOSIS_HTTP_PORT": ("70000", "MOSIS_HTTP_PORT must be between 1 and 65535, got 70000"),
    }
    for name, (value, message) in cases.items():
        with pytest.raises(ConfigError) as e:
            Settings.from_env({name: value})
        assert str(e.value) == message
    s = Settings.from_env({"MOSIS_LOG_LEVEL": "debug", "MOSIS_PUBLIC_URL": "https://x.example/",
                           "MOSIS_EDGE_STORAGE_SERVERS": "a:1, b:2", "MOSIS_APP_WORKERS": "0"})
    assert (s.log_level, s.public_url, s.edge_storage_servers) == ("DEBUG", "https://x.example", ("a:1", "b:2"))
    assert s.resolved_app_workers >= 1


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
