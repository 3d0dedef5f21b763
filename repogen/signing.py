"""OpenPGP signing through the ``gpg`` command, usable unattended (CI, cron: no TTY, no prompt).

The key comes either from an existing keyring (``homedir``, default the user's) or from an exported
secret key file, imported into a private, throw-away GNUPGHOME so the user's keyring is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import weakref
from pathlib import Path

from repogen.errors import PublishError

GPG = "gpg"


def _kill_agent(homedir: str) -> None:
    """Stop the agent gpg started for a private home, then remove the home with its secret key."""
    subprocess.run(
        ["gpgconf", "--homedir", homedir, "--kill", "gpg-agent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    shutil.rmtree(homedir, ignore_errors=True)


class Signer:
    """Signs repository metadata with one OpenPGP key, always with SHA256 digests.

    ``key`` is a key id or fingerprint; with ``key_file`` it may be omitted when the file holds
    exactly one secret key. ``passphrase_env`` names an environment variable holding the passphrase
    (the passphrase itself never appears on a command line).
    """

    def __init__(
        self,
        key: str | None = None,
        *,
        homedir: Path | None = None,
        key_file: Path | None = None,
        cache_dir: Path | None = None,
        passphrase_env: str | None = None,
    ) -> None:
        if shutil.which(GPG) is None:
            raise PublishError("signing needs the 'gpg' command, which is not installed",
                               hint="apt-get install gnupg")
        if key is None and key_file is None:
            raise PublishError("signing needs a key id (signing.key) or a key file (signing.key_file)")
        self._passphrase: str | None = None
        if passphrase_env is not None:
            if passphrase_env not in os.environ:
                raise PublishError(f"signing passphrase variable ${passphrase_env} is not set")
            self._passphrase = os.environ[passphrase_env]
        self._public_keys: dict[bool, bytes] = {}
        self._private_home: str | None = None
        self._finalizer: weakref.finalize | None = None
        if key_file is not None:
            self._homedir: str | None = self._import_key_file(Path(key_file), cache_dir)
        else:
            self._homedir = str(homedir) if homedir is not None else None
            if homedir is not None and not Path(homedir).is_dir():
                raise PublishError(f"{homedir}: GnuPG home directory does not exist")
        self._fingerprint = self._resolve(key, key_file)

    # -- setup -------------------------------------------------------------------------------

    def _import_key_file(self, key_file: Path, cache_dir: Path | None) -> str:
        if not key_file.is_file():
            raise PublishError(f"{key_file}: signing key file does not exist")
        # Short names: gpg-agent's socket path must fit in 108 bytes.
        parent = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        home = tempfile.mkdtemp(prefix="g", dir=parent)
        os.chmod(home, 0o700)
        self._private_home = home
        self._finalizer = weakref.finalize(self, _kill_agent, home)
        self._homedir = home
        result = self._gpg(["--import", "--", str(key_file)], check=False)
        if result.returncode != 0:
            self.close()
            raise PublishError(
                f"{key_file}: cannot import signing key: {result.stderr.decode(errors='replace').strip()}"
            )
        return home

    def _resolve(self, key: str | None, key_file: Path | None) -> str:
        """Find the one secret key meant: an unknown or ambiguous key id is the user's to fix."""
        where = f"key file {key_file}" if key_file else f"keyring {self._homedir or '~/.gnupg'}"
        args = ["--with-colons", "--list-secret-keys"]
        if key is not None:
            args += ["--", key]  # a key id from the config is never read as an option
        result = self._gpg(args, check=False)
        fingerprints: list[str] = []
        expect_fpr = False
        for line in result.stdout.decode(errors="replace").splitlines():
            fields = line.split(":")
            if fields[0] == "sec":
                expect_fpr = True
            elif fields[0] == "fpr" and expect_fpr:
                fingerprints.append(fields[9])
                expect_fpr = False
        if not fingerprints:
            what = f"signing key {key!r}" if key else "a secret key"
            self.close()
            raise PublishError(f"{what} not found in {where}")
        if len(fingerprints) > 1:
            self.close()
            raise PublishError(
                f"signing key {key or ''!r} is ambiguous in {where}: matches {', '.join(fingerprints)}",
                hint="give the full fingerprint",
            )
        return fingerprints[0]

    # -- gpg ---------------------------------------------------------------------------------

    def _gpg(self, args: list[str], data: bytes | None = None, *, check: bool = True,
             sign: bool = False) -> subprocess.CompletedProcess[bytes]:
        command = [GPG, "--batch", "--no-tty", "--quiet"]
        if self._homedir is not None:
            command += ["--homedir", self._homedir]
        pass_fds: tuple[int, ...] = ()
        read_fd = write_fd = -1
        if sign:
            command += ["--pinentry-mode", "loopback", "--digest-algo", "SHA256",
                        f"--local-user={self._fingerprint}"]
            if self._passphrase is not None:
                read_fd, write_fd = os.pipe()
                command += ["--passphrase-fd", str(read_fd)]
                pass_fds = (read_fd,)
        command += args
        try:
            if write_fd >= 0:
                assert self._passphrase is not None
                os.write(write_fd, self._passphrase.encode() + b"\n")
                os.close(write_fd)
                write_fd = -1
            result = subprocess.run(command, input=data, capture_output=True, pass_fds=pass_fds,
                                    check=False, timeout=300)
        finally:
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)
        if check and result.returncode != 0:
            message = result.stderr.decode(errors="replace").strip()
            raise PublishError(f"gpg failed with key {self._fingerprint}: {message}")
        return result

    # -- public API ----------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """The primary key's full fingerprint, for logs and for users pinning the key."""
        return self._fingerprint

    def clearsign(self, data: bytes) -> bytes:
        """An inline-signed copy of ``data`` (apt's InRelease)."""
        return self._gpg(["--clearsign"], data, sign=True).stdout

    def detach_sign(self, data: bytes, armor: bool = True) -> bytes:
        """A detached signature of ``data`` (Release.gpg, repomd.xml.asc, SHA256SUMS.asc)."""
        return self._gpg(["--detach-sign"] + (["--armor"] if armor else []), data, sign=True).stdout

    def public_key(self, armor: bool = True) -> bytes:
        """The public key alone, minimal (no third-party signatures), to publish next to the repos.

        Exported once per signer and form (a publish writes it for APT and RPM: a gpg run each)."""
        if armor not in self._public_keys:
            args = ["--export-options", "export-minimal", "--export"]
            if armor:
                args.insert(0, "--armor")
            key = self._gpg([*args, "--", self._fingerprint]).stdout
            if not key:
                raise PublishError(f"gpg exported no public key for {self._fingerprint}")
            self._public_keys[armor] = key
        return self._public_keys[armor]

    def close(self) -> None:
        """Stop the private agent and delete the imported secret key (no-op for a user keyring)."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None

    def __enter__(self) -> Signer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
