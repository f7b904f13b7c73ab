"""The dynamic section of an ELF shared library (DT_NEEDED, DT_RUNPATH), read from any seekable
binary stream: a file on disk or a member of a wheel opened with ``zipfile`` (no extraction,
no ``readelf``, which a slim image or a Mac may lack). x86-64 and aarch64 Linux libraries
only: ELF64, little-endian."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

PT_LOAD, PT_DYNAMIC = 1, 2
DT_NEEDED, DT_STRTAB, DT_RPATH, DT_STRSZ, DT_RUNPATH = 1, 5, 15, 10, 29


@dataclass(frozen=True)
class Dynamic:
    needed: tuple[str, ...]
    runpath: tuple[str, ...]


def read_dynamic(f: BinaryIO) -> Dynamic:
    f.seek(0)
    head = f.read(64)
    if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    (phoff,) = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    f.seek(phoff)
    table = f.read(phentsize * phnum)
    loads: list[tuple[int, int, int]] = []
    dynamic: tuple[int, int] | None = None
    for i in range(phnum):
        p_type, _, offset, vaddr, _, filesz, _, _ = struct.unpack_from(
            "<IIQQQQQQ", table, i * phentsize
        )
        if p_type == PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (offset, filesz)
    if dynamic is None:
        return Dynamic((), ())
    f.seek(dynamic[0])
    raw = f.read(dynamic[1])
    entries = [struct.unpack_from("<qQ", raw, i) for i in range(0, len(raw) - 15, 16)]
    tags = dict(entries)
    strtab, strsz = tags[DT_STRTAB], tags[DT_STRSZ]
    # DT_STRTAB is an address: map it to a file offset through the segment holding it.
    offset = next(o + strtab - va for va, o, size in loads if va <= strtab < va + size)
    f.seek(offset)
    strings = f.read(strsz)

    def text(at: int) -> str:
        return strings[at : strings.index(b"\0", at)].decode()

    return Dynamic(
        needed=tuple(text(v) for t, v in entries if t == DT_NEEDED),
        runpath=tuple(
            p for t, v in entries if t in (DT_RPATH, DT_RUNPATH) for p in text(v).split(":")
        ),
    )
