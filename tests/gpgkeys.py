"""Throw-away OpenPGP keys for tests (never production code: no passphrase, fast ed25519)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def make_test_key(homedir: Path, name: str = "repogen test", passphrase: str = "") -> str:
    """Create a signing key in ``homedir`` (created 0700) and return its fingerprint."""
    homedir.mkdir(parents=True, exist_ok=True)
    os.chmod(homedir, 0o700)
    subprocess.run(
        ["gpg", "--batch", "--homedir", str(homedir), "--pinentry-mode", "loopback",
         "--passphrase", passphrase, "--quick-gen-key", f"{name} <test@example.invalid>",
         "ed25519", "sign", "never"],
        check=True, capture_output=True, timeout=60,
    )
    listing = subprocess.run(
        ["gpg", "--batch", "--homedir", str(homedir), "--with-colons", "--list-secret-keys", name],
        check=True, capture_output=True, timeout=60,
    ).stdout.decode()
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def export_secret_key(homedir: Path, fingerprint: str, dest: Path, passphrase: str = "") -> Path:
    """Write the secret key to ``dest`` as a CI system would hold it."""
    data = subprocess.run(
        ["gpg", "--batch", "--homedir", str(homedir), "--pinentry-mode", "loopback",
         "--passphrase", passphrase, "--armor", "--export-secret-keys", fingerprint],
        check=True, capture_output=True, timeout=60,
    ).stdout
    dest.write_bytes(data)
    return dest


def stop_agent(homedir: Path) -> None:
    """Kill the agent a test keyring started, so no process outlives the test."""
    subprocess.run(["gpgconf", "--homedir", str(homedir), "--kill", "gpg-agent"],
                   capture_output=True, check=False, timeout=30)
