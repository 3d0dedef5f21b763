"""Index files put together from compressed pieces: what the real gzip and xz make of them."""

from __future__ import annotations

import hashlib
import itertools
import random
import subprocess
from pathlib import Path

import pytest

from repogen.repos import compress


def _stanzas(count: int, seed: int = 1) -> tuple[list[str], list[str]]:
    """Packages-like stanzas and the sha256 each package would have."""
    rng = random.Random(seed)
    shas = [hashlib.sha256(f"{seed}-{i}-{rng.random()}".encode()).hexdigest() for i in range(count)]
    stanzas = [f"Package: pkg{i}\nVersion: 1.{i}\nArchitecture: amd64\nSHA256: {sha}\n"
               f"Description: package {i}\n {'x' * rng.randrange(0, 200)}\n" for i, sha in enumerate(shas)]
    return stanzas, shas


def _files(pieces: list[bytes]) -> tuple[bytes, bytes, bytes]:
    compressed = [compress.compress_piece(hashlib.sha256(text).digest(), text) for text in pieces]
    plain = b"".join(pieces)
    return plain, compress.gzip_file(compressed, plain), compress.xz_file(compressed)


def _tool(tmp_path: Path, name: str, data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    path = tmp_path / name
    path.write_bytes(data)
    return subprocess.run([*args, str(path)], capture_output=True, check=True, timeout=60)


@pytest.mark.parametrize("count", [0, 1, 700, 3000])
def test_gzip_and_xz_of_pieces_decompress_to_the_index(count: int, tmp_path: Path) -> None:
    stanzas, shas = _stanzas(count)
    pieces = compress.cut(stanzas, shas)
    assert b"".join(pieces) == "".join(stanza + "\n" for stanza in stanzas).encode()
    assert all(piece.count(b"\nPackage: ") < compress.MAX_PIECE_STANZAS for piece in pieces)
    plain, gz, xz = _files(pieces)
    assert _tool(tmp_path, "Packages.gz", gz, "gzip", "-dc").stdout == plain
    assert _tool(tmp_path, "Packages.xz", xz, "xz", "-dc").stdout == plain
    _tool(tmp_path, "Packages.gz", gz, "gzip", "-t")
    _tool(tmp_path, "Packages.xz", xz, "xz", "-t")
    # One xz stream of one block per piece: what apt's decoder (which stops after one stream) reads.
    listing = _tool(tmp_path, "Packages.xz", xz, "xz", "--robot", "--list").stdout.decode()
    totals = next(line.split("\t") for line in listing.splitlines() if line.startswith("totals"))
    assert (totals[1], totals[2]) == ("1", str(len(pieces)))
    if count >= 700:
        assert len(pieces) > 1
        # ~3% bigger than compressing the whole text at once, not more.
        assert len(xz) < 1.1 * len(_tool(tmp_path, "whole", plain, "xz", "-0", "-c").stdout)
        assert len(gz) < 1.1 * len(_tool(tmp_path, "whole", plain, "gzip", "-6", "-c").stdout)


def test_adding_or_removing_a_stanza_changes_one_piece() -> None:
    stanzas, shas = _stanzas(3000, seed=2)
    extra, extra_shas = _stanzas(40, seed=3)
    rng = random.Random(4)

    def pieces(texts: list[str], digests: list[str]) -> set[bytes]:
        return set(compress.cut(texts, digests))

    ends = [i for i, sha in enumerate(shas) if sha.startswith(compress.PIECE_ENDS)]
    assert max(b - a for a, b in itertools.pairwise(ends)) > compress.MAX_PIECE_STANZAS  # both rules met
    before = pieces(stanzas, shas)
    for stanza, sha in zip(extra, extra_shas, strict=True):
        at = rng.randrange(len(stanzas) + 1)
        after = pieces([*stanzas[:at], stanza, *stanzas[at:]], [*shas[:at], sha, *shas[at:]])
        assert len(after - before) <= 2 and len(before - after) <= 2  # joined one, or split it in two
        gone = rng.randrange(len(stanzas))
        after = pieces(stanzas[:gone] + stanzas[gone + 1:], shas[:gone] + shas[gone + 1:])
        assert len(after - before) <= 1 and len(before - after) <= 2  # shrank one, or merged two
