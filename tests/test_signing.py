"""Signer: unattended signing from a keyring or a key file, verified with the real gpgv."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from repogen.errors import PublishError
from repogen.signing import Signer
from tests.gpgkeys import export_secret_key, make_test_key, stop_agent

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    home = tmp_path_factory.mktemp("gnupg")
    fingerprint = make_test_key(home)
    yield home, fingerprint
    stop_agent(home)


def _gpgv(tmp_path: Path, signer: Signer, *args: str) -> subprocess.CompletedProcess[bytes]:
    keyring = tmp_path / "trusted.gpg"
    keyring.write_bytes(signer.public_key(armor=False))
    return subprocess.run(["gpgv", "--keyring", str(keyring), *args], capture_output=True, timeout=60)


def test_detached_signature_verifies_and_uses_sha256(keyring: tuple[Path, str], tmp_path: Path) -> None:
    home, fingerprint = keyring
    signer = Signer(fingerprint, homedir=home)
    assert signer.fingerprint == fingerprint
    data = b"SHA256SUMS contents\n"
    (tmp_path / "data").write_bytes(data)
    signature = signer.detach_sign(data)
    assert signature.startswith(b"-----BEGIN PGP SIGNATURE-----")
    (tmp_path / "data.asc").write_bytes(signature)
    result = _gpgv(tmp_path, signer, str(tmp_path / "data.asc"), str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    packets = subprocess.run(["gpg", "--list-packets"], input=signature, capture_output=True, timeout=60)
    assert b"digest algo 8" in packets.stdout  # 8 = SHA256

    (tmp_path / "data").write_bytes(data + b"tampered")
    assert _gpgv(tmp_path, signer, str(tmp_path / "data.asc"), str(tmp_path / "data")).returncode != 0


def test_binary_detached_signature(keyring: tuple[Path, str], tmp_path: Path) -> None:
    signer = Signer(keyring[1], homedir=keyring[0])
    signature = signer.detach_sign(b"x", armor=False)
    assert not signature.startswith(b"-----")
    (tmp_path / "x").write_bytes(b"x")
    (tmp_path / "x.sig").write_bytes(signature)
    assert _gpgv(tmp_path, signer, str(tmp_path / "x.sig"), str(tmp_path / "x")).returncode == 0


def test_clearsign_verifies(keyring: tuple[Path, str], tmp_path: Path) -> None:
    signer = Signer(keyring[1], homedir=keyring[0])
    signed = signer.clearsign(b"Origin: repogen\n")
    assert signed.startswith(b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256")
    (tmp_path / "InRelease").write_bytes(signed)
    assert _gpgv(tmp_path, signer, str(tmp_path / "InRelease")).returncode == 0


def test_public_key_armored_and_binary(keyring: tuple[Path, str]) -> None:
    signer = Signer(keyring[1], homedir=keyring[0])
    assert signer.public_key().startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert signer.public_key(armor=False)[0] & 0x80  # an OpenPGP packet tag
    assert b"PRIVATE" not in signer.public_key()


def test_key_file_is_imported_into_private_home_and_removed(keyring: tuple[Path, str], tmp_path: Path) -> None:
    key_file = export_secret_key(keyring[0], keyring[1], tmp_path / "secret.asc")
    cache = tmp_path / "cache"
    with Signer(key_file=key_file, cache_dir=cache) as signer:
        assert signer.fingerprint == keyring[1]
        assert signer.clearsign(b"hello\n").startswith(b"-----BEGIN PGP SIGNED MESSAGE-----")
        assert len(list(cache.iterdir())) == 1
    assert list(cache.iterdir()) == []


def test_key_file_with_passphrase_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "gnupg"
    fingerprint = make_test_key(home, name="protected", passphrase="s3cret words")
    key_file = export_secret_key(home, fingerprint, tmp_path / "secret.asc", passphrase="s3cret words")
    stop_agent(home)
    monkeypatch.setenv("REPOGEN_TEST_PASSPHRASE", "s3cret words")
    with Signer(fingerprint, key_file=key_file, cache_dir=tmp_path / "c",
                passphrase_env="REPOGEN_TEST_PASSPHRASE") as signer:
        assert signer.detach_sign(b"x").startswith(b"-----BEGIN PGP SIGNATURE-----")
    monkeypatch.setenv("REPOGEN_TEST_PASSPHRASE", "wrong")
    with Signer(fingerprint, key_file=key_file, cache_dir=tmp_path / "d",
                passphrase_env="REPOGEN_TEST_PASSPHRASE") as signer, pytest.raises(PublishError, match=r"gpg failed"):
        signer.detach_sign(b"x")


def test_unknown_key_id_is_a_clear_error(keyring: tuple[Path, str]) -> None:
    with pytest.raises(PublishError, match=r"signing key 'DEADBEEFDEADBEEF' not found in keyring"):
        Signer("DEADBEEFDEADBEEF", homedir=keyring[0])


def test_unknown_key_in_key_file_and_missing_file(keyring: tuple[Path, str], tmp_path: Path) -> None:
    key_file = export_secret_key(keyring[0], keyring[1], tmp_path / "secret.asc")
    with pytest.raises(PublishError, match=r"not found in key file"):
        Signer("DEADBEEFDEADBEEF", key_file=key_file, cache_dir=tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []
    with pytest.raises(PublishError, match=r"does not exist"):
        Signer(key_file=tmp_path / "missing.asc", cache_dir=tmp_path / "c")
    (tmp_path / "junk.asc").write_text("not a key\n")
    with pytest.raises(PublishError, match=r"junk\.asc"):
        Signer(key_file=tmp_path / "junk.asc", cache_dir=tmp_path / "c")


def test_missing_passphrase_variable(keyring: tuple[Path, str]) -> None:
    with pytest.raises(PublishError, match=r"\$REPOGEN_NO_SUCH_VARIABLE is not set"):
        Signer(keyring[1], homedir=keyring[0], passphrase_env="REPOGEN_NO_SUCH_VARIABLE")


def test_a_key_id_is_never_read_as_a_gpg_option(keyring: tuple[Path, str], tmp_path: Path) -> None:
    """``signing: {key: --output=FILE}`` is a key nobody has, not an option writing FILE."""
    written = tmp_path / "written-by-gpg"
    for key in (f"--output={written}", "--version"):
        with pytest.raises(PublishError, match="not found"):
            Signer(key, homedir=keyring[0])
    assert not written.exists()
    key_file = tmp_path / "--import-me.asc"  # a key file whose name looks like an option
    key_file.write_bytes(Signer(keyring[1], homedir=keyring[0]).public_key())
    with pytest.raises(PublishError, match=r"no secret key|not found"):
        Signer(key_file=key_file, cache_dir=tmp_path / "c")
