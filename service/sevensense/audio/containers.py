"""What libsndfile leaves to its caller about containers: the links of a chained Ogg file
(it decodes only the first), read through a byte window of the one payload."""

from __future__ import annotations

import io
import struct
from typing import BinaryIO

_PAGE = struct.Struct("<4sBBqIIIB")  # capture, version, type, granule, serial, seq, crc, segs
_BOS = 0x02
_RESYNC = 1 << 16


class ByteWindow(io.RawIOBase):
    """``raw[start:end]`` as a seekable stream, without copying: libsndfile's virtual I/O
    opens one link of a chained Ogg file, or the payload past a damaged tag, through it."""

    def __init__(self, raw: BinaryIO, start: int, end: int) -> None:
        super().__init__()
        self._raw, self._start, self._end, self._pos = raw, start, end, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._end - self._start}
        self._pos = max(0, base[whence] + offset)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        left = self._end - self._start - self._pos
        n = left if size is None or size < 0 else min(size, left)
        if n <= 0:
            return b""
        self._raw.seek(self._start + self._pos)
        data = self._raw.read(n)
        self._pos += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def ogg_link_starts(raw: BinaryIO, start: int, end: int) -> list[int]:
    """Byte offsets of the second and later links of a chained Ogg file.

    A link begins with its streams' beginning-of-stream pages; a BOS page after a page that
    was not one starts the next link. Page headers are hopped over, not the payload read;
    garbage between pages is skipped by searching for the next capture pattern."""
    links: list[int] = []
    at, last_bos = start, True
    while at + _PAGE.size <= end:
        raw.seek(at)
        head = raw.read(_PAGE.size)
        if len(head) < _PAGE.size:
            break
        capture, _, kind, _, _, _, _, segs = _PAGE.unpack(head)
        if capture != b"OggS":
            raw.seek(at + 1)
            found = raw.read(min(_RESYNC, end - at - 1)).find(b"OggS")
            if found < 0:
                break
            at += 1 + found
            continue
        table = raw.read(segs)
        if len(table) < segs:
            break
        bos = bool(kind & _BOS)
        if bos and not last_bos:
            links.append(at)
        last_bos = bos
        at += _PAGE.size + segs + sum(table)
    return links
