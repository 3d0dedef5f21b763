"""Compressed index files put together from pieces compressed once and cached.

Adding one package to a 10,000-package ``Packages`` changes one stanza: compressing the whole 3 MB
again (gzip and xz) was most of an add-one publish. Here the index is cut into pieces at
content-defined places (a stanza ends a piece when its package's sha256 says so: an added or removed
stanza changes only the piece it is in), each piece is compressed on its own, and the files are put
together from the pieces:

* ``.gz``: one gzip member whose deflate stream is the pieces' raw deflate streams, each ended by a
  sync flush (byte-aligned, non-final), then zlib's empty final block; the trailer's CRC-32 and size
  are those of the whole text (what pigz does with its independent blocks).
* ``.xz``: one xz stream whose blocks are the pieces (each compressed by liblzma as a one-block
  stream, from which the block and its index record are taken), with a new index and footer
  (``xz-file-format.txt`` sections 2.1, 3 and 4; what ``xz -T`` writes for a multi-block file).

Both are single-member, single-stream files: apt's own decoders (zlib's ``gzread``; liblzma with
``lzma_auto_decoder(..., 0)``, which stops at the end of the first stream) read them as they read any
gzip or xz file. Concatenated gzip members would be read by zlib, but of concatenated xz streams apt
reads only the first (and then fails its hash check: tried with apt 2.6): this module never writes those.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import compress as compress_by
from operator import methodcaller

from repogen.errors import PublishError

#: A stanza ends a piece when its package's sha256 (hex) starts with one of these: 1 in 128, so pieces
#: of ~128 stanzas (~60 KB of Packages), 3 % bigger files than one-piece compression, ~1 ms gzip and
#: ~3 ms xz for the piece that changed.
PIECE_ENDS = ("00", "01")
#: A run of more stanzas than this without such an end (rare: 2 % of runs) is cut where a sha256
#: starts with ``MINOR_PIECE_ENDS`` (1 in 16), still by content; and at this size if even that fails.
MAX_PIECE_STANZAS = 512
MINOR_PIECE_ENDS = "0"
GZIP_LEVEL = 6
XZ_PRESET = 0

_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, mtime 0, OS unknown
_XZ_EMPTY = lzma.compress(b"", format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64)
_XZ_HEADER = _XZ_EMPTY[:12]  # magic, stream flags (CRC64 checks), their CRC32
_XZ_FLAGS = _XZ_HEADER[6:8]


def _final_deflate_block() -> bytes:
    return zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)


_DEFLATE_END = _final_deflate_block()


@dataclass(frozen=True)
class Piece:
    """One piece of an index, its text and both compressions; ``key`` names its content (the caller's
    choice: what the text is made of)."""

    key: bytes
    text: bytes
    deflate: bytes  # raw deflate, sync-flushed, not final
    xz_block: bytes  # one xz block, padded to 4 bytes
    xz_unpadded: int  # the block's "unpadded size" (for the stream index)


def spans(digests: Sequence[str]) -> list[tuple[int, int]]:
    """Where an index of stanzas is cut into pieces, by content: after each stanza whose package's
    sha256 (``digests``, hex) starts with one of ``PIECE_ENDS``. Adding or removing a stanza then
    changes the one piece it is in (or the two it joins or splits). (start, end) of each piece."""
    ends = list(compress_by(range(1, len(digests) + 1), map(methodcaller("startswith", PIECE_ENDS), digests)))
    if not ends or ends[-1] != len(digests):
        ends.append(len(digests))
    out: list[tuple[int, int]] = []
    start = 0
    for end in ends:
        if end - start > MAX_PIECE_STANZAS:
            minor = [index + 1 for index in range(start, end - 1) if digests[index].startswith(MINOR_PIECE_ENDS)]
            for stop in [*minor, end]:
                while stop - start > MAX_PIECE_STANZAS:
                    out.append((start, start + MAX_PIECE_STANZAS))
                    start += MAX_PIECE_STANZAS
                out.append((start, stop))
                start = stop
        elif end > start:
            out.append((start, end))
        start = end
    return out


def text(stanzas: Sequence[str]) -> bytes:
    """Index text: each stanza followed by a blank line."""
    return ("\n".join(stanzas) + "\n").encode()


def cut(stanzas: Sequence[str], digests: Sequence[str]) -> list[bytes]:
    """The index text in pieces (see :func:`spans`)."""
    return [text(stanzas[start:end]) for start, end in spans(digests)]


def compress_piece(key: bytes, piece_text: bytes) -> Piece:
    """Compress one piece both ways (zlib and lzma release the GIL: callers may use threads)."""
    deflater = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15)
    deflate = deflater.compress(piece_text) + deflater.flush(zlib.Z_SYNC_FLUSH)
    stream = lzma.compress(piece_text, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=XZ_PRESET)
    try:
        records, index_size = _xz_index_records(stream)
    except (ValueError, IndexError, struct.error) as error:
        records, index_size = [], 0
        problem = str(error)
    else:
        problem = f"{len(records)} blocks"
    block = stream[12:len(stream) - 12 - index_size]
    if len(records) != 1 or records[0][1] != len(piece_text) or len(block) != _padded(records[0][0]):
        # (liblzma writes one block for a small input: never seen otherwise)
        raise PublishError(f"Packages.xz: liblzma wrote an unexpected stream for one piece "
                           f"({problem}); cannot put the index together")
    return Piece(key, piece_text, deflate, block, records[0][0])


def gzip_file(pieces: Iterable[Piece], text: bytes) -> bytes:
    """One gzip member of the pieces; ``text`` is the whole uncompressed index (for the trailer)."""
    return b"".join([_GZIP_HEADER, *(piece.deflate for piece in pieces), _DEFLATE_END,
                     struct.pack("<II", zlib.crc32(text), len(text) & 0xFFFFFFFF)])


def xz_file(pieces: Sequence[Piece]) -> bytes:
    """One xz stream whose blocks are the pieces."""
    index = bytearray(b"\x00")
    index += _varint(len(pieces))
    for piece in pieces:
        index += _varint(piece.xz_unpadded) + _varint(len(piece.text))
    index += b"\x00" * (-len(index) % 4)
    index += struct.pack("<I", zlib.crc32(index))
    backward = struct.pack("<I", len(index) // 4 - 1) + _XZ_FLAGS
    footer = struct.pack("<I", zlib.crc32(backward)) + backward + b"YZ"
    return b"".join([_XZ_HEADER, *(piece.xz_block for piece in pieces), bytes(index), footer])


def _padded(size: int) -> int:
    return (size + 3) & ~3


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        shift += 7
        if not byte & 0x80:
            return value, at
        if shift > 63:
            raise ValueError("xz varint too long")


def _xz_index_records(stream: bytes) -> tuple[list[tuple[int, int]], int]:
    """((unpadded, uncompressed) per block, index size) of a one-stream xz file."""
    footer = stream[-12:]
    if footer[10:] != b"YZ" or footer[8:10] != _XZ_FLAGS:
        raise ValueError("not an xz stream footer")
    index_size = (struct.unpack("<I", footer[4:8])[0] + 1) * 4
    index = stream[-12 - index_size:-12]
    if index[0] != 0:
        raise ValueError("not an xz index")
    count, at = _read_varint(index, 1)
    records = []
    for _ in range(count):
        unpadded, at = _read_varint(index, at)
        uncompressed, at = _read_varint(index, at)
        records.append((unpadded, uncompressed))
    return records, index_size
