"""The package signing key: given, or made once and kept."""

from __future__ import annotations

import base64
import stat
import threading

import pytest

from app.platform.signing import KEY_FILE, load_signing_key, signed_message, verify

# RFC 8032, section 7.1, test 1.
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")


def test_a_given_seed_is_the_key(tmp_path):
    key = load_signing_key(base64.b64encode(RFC_SEED).decode(), tmp_path)
    info = key.public_info()
    assert info["algorithm"] == "ed25519"
    assert base64.b64decode(info["public_key"]) == RFC_PUBLIC
    signature = key.sign_package("com.example.notes", 42, "ab" * 32, 402)
    assert verify(info["public_key"], signature, signed_message("com.example.notes", 42, "ab" * 32, 402))
    assert not verify(info["public_key"], signature, signed_message("com.example.notes", 43, "ab" * 32, 402))
    assert not (tmp_path / KEY_FILE).exists()  # nothing written when the key is given


@pytest.mark.parametrize("seed", ["not base64!", base64.b64encode(b"short").decode(),
                                  base64.b64encode(RFC_SEED + b"x").decode()])
def test_a_bad_seed_is_refused(tmp_path, seed):
    with pytest.raises(ValueError):
        load_signing_key(seed, tmp_path)


def test_the_generated_key_is_kept_private_and_reused(tmp_path):
    first = load_signing_key("", tmp_path / "data")
    path = tmp_path / "data" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_signing_key("", tmp_path / "data")
    assert again.key_id == first.key_id
    assert again.public_info() == first.public_info()
    assert [p.name for p in path.parent.iterdir()] == [KEY_FILE]  # no temporary files left


def test_starts_at_the_same_moment_agree_on_one_key(tmp_path):
    keys, barrier = [], threading.Barrier(8)

    def start():
        barrier.wait()
        keys.append(load_signing_key("", tmp_path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({k.key_id for k in keys}) == 1
    assert load_signing_key("", tmp_path).key_id == keys[0].key_id
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]
