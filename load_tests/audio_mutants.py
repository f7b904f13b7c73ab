"""Structure-aware audio mutants: hostile and extreme files made from real recordings.

Seeds are the recordings under ``../shared/audio`` written by soundfile into every container
the service takes (WAV, FLAC, Ogg/Vorbis, Ogg/Opus, MP3), plus the shared MP3 and Ogg files
as their encoders made them (ID3v2 tag, Info header). A mutant changes one structure its
container parser reads, not random bytes: WAV ``RIFF``/``fmt``/``data`` fields and extra
chunks; FLAC STREAMINFO fields and metadata blocks; Ogg page fields, Opus/Vorbis
identification headers and chains (CRC recomputed, or not); MP3 frame headers, ID3v2 tags
and Xing/Info frame counts. ``named_cases`` holds the files issue 27 names, valid ones and
hostile ones. Everything is deterministic in the seed.
"""

from __future__ import annotations

import io
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"

# --- seeds ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutant:
    name: str  # ends in the container's usual extension
    data: bytes
    kind: str  # the structure changed, e.g. "wav.fmt.rate"


def encode(x: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def clip(seconds: float = 3.0) -> tuple[np.ndarray, int]:
    """A real bird call at 48 kHz (BirdNET-Analyzer's sample), cut to ``seconds``."""
    x, rate = sf.read(AUDIO / "birdnet_sample_3s_48k.wav", dtype="float32")
    return x[: int(seconds * rate)], rate


def seeds() -> dict[str, bytes]:
    x, rate = clip()
    low = x[::3]  # 16 kHz: still a real call, cheaper to decode and resample
    return {
        "seed.wav": encode(x, rate, "WAV", "PCM_16"),
        "seed_float.wav": encode(low, 16000, "WAV", "FLOAT"),
        "seed.flac": encode(x, rate, "FLAC"),
        "seed.ogg": encode(low, 16000, "OGG", "VORBIS"),
        "seed.opus": encode(x, rate, "OGG", "OPUS"),
        "seed.mp3": encode(low, 16000, "MP3", "MPEG_LAYER_III"),
        "real.mp3": (AUDIO / "perch_testclip_10s_16k.mp3").read_bytes(),  # ID3v2 + Info
        "real.ogg": (AUDIO / "perch_testclip_10s_16k.ogg").read_bytes(),
    }


# --- WAV -----------------------------------------------------------------------------------


def riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, at = [], 12
    while at + 8 <= len(data):
        cid, size = data[at : at + 4], struct.unpack("<I", data[at + 4 : at + 8])[0]
        chunks.append((cid, data[at + 8 : at + 8 + size]))
        at += 8 + size + (size & 1)
    return chunks


def riff(chunks: list[tuple[bytes, bytes]], form: bytes = b"WAVE") -> bytes:
    body = b"".join(
        cid + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) & 1 else b"")
        for cid, payload in chunks
    )
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + form + body


_FMT_FIELDS = {  # name: (offset in fmt, struct format)
    "tag": (0, "<H"),
    "channels": (2, "<H"),
    "rate": (4, "<I"),
    "byte_rate": (8, "<I"),
    "block_align": (12, "<H"),
    "bits": (14, "<H"),
}
_ODD_VALUES = [0, 1, 2, 3, 7, 255, 1024, 4000, 3999, 65535, 2**31, 2**32 - 1]


def wav_mutants(data: bytes, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    chunks = riff_chunks(data)
    fmt = dict(chunks)[b"fmt "]
    field = rng.choice(list(_FMT_FIELDS))
    off, code = _FMT_FIELDS[field]
    value = rng.choice(_ODD_VALUES) % (1 << (8 * struct.calcsize(code)))
    new_fmt = fmt[:off] + struct.pack(code, value) + fmt[off + struct.calcsize(code) :]
    yield f"wav.fmt.{field}", riff([(c, new_fmt if c == b"fmt " else p) for c, p in chunks])
    extra = rng.choice([b"LIST", b"bext", b"iXML", b"JUNK", b"cue ", b"fact", b"\0\0\0\0"])
    payload = rng.randbytes(rng.choice([0, 1, 3, 602, 4096]))
    yield f"wav.chunk.{extra.decode(errors='replace').strip()}", riff([(extra, payload), *chunks])
    raw = bytearray(data)
    size_at = data.find(b"data") + 4
    raw[size_at : size_at + 4] = struct.pack("<I", rng.choice([0, 1, 2**31, 2**32 - 1]))
    yield "wav.data.size", bytes(raw)
    raw = bytearray(data)
    raw[4:8] = struct.pack("<I", rng.choice([0, 4, 2**32 - 1]))
    yield "wav.riff.size", bytes(raw)


# --- FLAC ----------------------------------------------------------------------------------


def flac_blocks(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """(type, body) of each metadata block, and the frames after them."""
    at, blocks = 4, []
    while at + 4 <= len(data):
        head = data[at]
        size = int.from_bytes(data[at + 1 : at + 4], "big")
        blocks.append((head & 0x7F, data[at + 4 : at + 4 + size]))
        at += 4 + size
        if head & 0x80:
            break
    return blocks, data[at:]


def flac(blocks: list[tuple[int, bytes]], frames: bytes) -> bytes:
    out = [b"fLaC"]
    for i, (kind, body) in enumerate(blocks):
        last = 0x80 if i == len(blocks) - 1 else 0
        out.append(bytes([last | kind]) + len(body).to_bytes(3, "big") + body)
    return b"".join(out) + frames


def streaminfo(body: bytes, **fields: int) -> bytes:
    """STREAMINFO with some of rate (20 bits), channels (3), bps (5), total (36) replaced."""
    packed = int.from_bytes(body[10:18], "big")
    rate, ch, bps, total = (
        packed >> 44,
        (packed >> 41) & 7,
        (packed >> 36) & 31,
        packed & (2**36 - 1),
    )
    rate = fields.get("rate", rate) & (2**20 - 1)
    ch = fields.get("channels", ch + 1) - 1 & 7
    bps = fields.get("bps", bps + 1) - 1 & 31
    total = fields.get("total", total) & (2**36 - 1)
    packed = rate << 44 | ch << 41 | bps << 36 | total
    head = body[:10]
    if "max_block" in fields:
        head = head[:2] + struct.pack(">H", fields["max_block"] & 0xFFFF) + head[4:]
    return head + packed.to_bytes(8, "big") + body[18:]


def flac_mutants(data: bytes, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    blocks, frames = flac_blocks(data)
    info = blocks[0][1]
    field = rng.choice(["rate", "channels", "bps", "total", "max_block"])
    value = {
        "rate": rng.choice([1, 3, 100, 3999, 4000, 8000, 655350, 2**20 - 1]),
        "channels": rng.choice([1, 2, 8]),
        "bps": rng.choice([4, 8, 24, 32]),
        "total": rng.choice([0, 1, 2**32, 2**36 - 1]),
        "max_block": rng.choice([0, 16, 65535]),
    }[field]
    yield (
        f"flac.streaminfo.{field}",
        flac([(0, streaminfo(info, **{field: value})), *blocks[1:]], frames),
    )
    kind = rng.choice([1, 2, 3, 4, 5, 6, 7, 126])  # padding, app, seektable, comment, cue, pic
    body = rng.randbytes(rng.choice([0, 18, 34, 1000]))
    if kind == 4:  # a Vorbis comment claiming a huge vendor string
        body = struct.pack("<I", rng.choice([0, 2**31])) + body
    yield f"flac.block.{kind}", flac([blocks[0], (kind, body), *blocks[1:]], frames)
    yield "flac.last_flag", data[:4] + bytes([data[4] | 0x80]) + data[5:]


# --- Ogg -----------------------------------------------------------------------------------


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = (r << 1) ^ 0x04C11DB7 if r & 0x80000000 else r << 1
        table.append(r & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def ogg_crc(page: bytes) -> int:
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[(crc >> 24) ^ byte]
    return crc


def ogg_pages(data: bytes) -> list[bytearray]:
    pages, at = [], 0
    while at + 27 <= len(data) and data[at : at + 4] == b"OggS":
        segs = data[at + 26]
        size = 27 + segs + sum(data[at + 27 : at + 27 + segs])
        pages.append(bytearray(data[at : at + size]))
        at += size
    return pages


def seal(page: bytearray) -> bytes:
    page[22:26] = b"\0\0\0\0"
    page[22:26] = struct.pack("<I", ogg_crc(bytes(page)))
    return bytes(page)


def ogg_mutants(data: bytes, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    pages = ogg_pages(data)
    if not pages:
        return
    crc = rng.random() < 0.8
    i = rng.randrange(len(pages))
    page = bytearray(pages[i])
    field = rng.choice(["granule", "serial", "type", "seq"])
    if field == "granule":
        page[6:14] = struct.pack("<q", rng.choice([-1, 0, 2**31, 2**62]))
    elif field == "serial":
        page[14:18] = rng.randbytes(4)
    elif field == "type":
        page[5] = rng.choice([0, 1, 2, 4, 7])
    else:
        page[18:22] = struct.pack("<I", rng.choice([0, 2**32 - 1]))
    out = [bytes(p) for p in pages]
    out[i] = seal(page) if crc else bytes(page)
    yield f"ogg.page.{field}", b"".join(out)
    head = bytearray(pages[0])
    body = 27 + head[26]
    if head[body : body + 8] == b"OpusHead":
        at = body + rng.choice([9, 10, 12, 16, 18])  # channels, pre-skip, rate, gain, mapping
        head[at : at + 2] = struct.pack("<H", rng.choice([0, 1, 255, 65535]))
        yield "ogg.opushead", seal(head) + b"".join(bytes(p) for p in pages[1:])
    elif head[body + 1 : body + 7] == b"vorbis":
        at = body + rng.choice([11, 12, 16])  # channels, rate, bitrate
        head[at : at + 4] = struct.pack("<I", rng.choice([0, 1, 3, 2**31]))[
            : 1 if at == body + 11 else 4
        ]
        yield "ogg.vorbis_id", seal(head) + b"".join(bytes(p) for p in pages[1:])
    yield "ogg.chain", data + data[: len(data) // rng.choice([1, 2, 3])]


# --- MP3 -----------------------------------------------------------------------------------


def mp3_first_frame(data: bytes) -> int:
    at = 0
    if data[:3] == b"ID3":
        size = data[6:10]
        at = 10 + (size[0] << 21 | size[1] << 14 | size[2] << 7 | size[3])
    while at + 1 < len(data) and not (data[at] == 0xFF and data[at + 1] & 0xE0 == 0xE0):
        at += 1
    return at


def mp3_mutants(data: bytes, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    raw = bytearray(data)
    first = mp3_first_frame(data)
    if first + 4 <= len(raw):
        bit = rng.choice(["version", "layer", "bitrate", "rate", "mode", "padding"])
        b1, b2, b3 = raw[first + 1], raw[first + 2], raw[first + 3]
        if bit == "version":
            b1 = (b1 & ~0x18) | rng.choice([0, 8, 16, 24])
        elif bit == "layer":
            b1 = (b1 & ~0x06) | rng.choice([0, 2, 4, 6])
        elif bit == "bitrate":
            b2 = (b2 & 0x0F) | rng.choice([0, 0xF0, 0x10])
        elif bit == "rate":
            b2 = (b2 & ~0x0C) | rng.choice([0, 4, 8, 12])
        elif bit == "mode":
            b3 = (b3 & 0x3F) | rng.choice([0, 0x40, 0xC0])
        else:
            b2 ^= 0x02
        raw[first + 1 : first + 4] = bytes([b1 & 0xFF, b2 & 0xFF, b3 & 0xFF])
        yield f"mp3.frame.{bit}", bytes(raw)
    tag = rng.choice(["Xing", "Info"])
    at = data.find(b"Xing")
    at = at if at >= 0 else data.find(b"Info")
    if at >= 0:
        lie = bytearray(data)
        lie[at : at + 4] = tag.encode()
        lie[at + 4 : at + 8] = struct.pack(">I", 0x0F)
        lie[at + 8 : at + 12] = struct.pack(">I", rng.choice([0, 1, 2**31, 2**32 - 1]))
        lie[at + 12 : at + 16] = struct.pack(">I", rng.choice([0, 2**31]))
        yield f"mp3.{tag.lower()}.frames", bytes(lie)
    size = rng.choice([0, 3, 10, 2**21, 2**28 - 1])
    syncsafe = bytes([(size >> s) & 0x7F for s in (21, 14, 7, 0)])
    body = data[mp3_first_frame(data) :] if data[:3] == b"ID3" else data
    tag_body = rng.randbytes(rng.choice([0, 10, 200]))
    yield "mp3.id3.size", b"ID3" + bytes([rng.choice([2, 3, 4]), 0, 0]) + syncsafe + tag_body + body


# --- everything ----------------------------------------------------------------------------

_BY_EXT: dict[str, Callable[[bytes, random.Random], Iterator[tuple[str, bytes]]]] = {
    "wav": wav_mutants,
    "flac": flac_mutants,
    "ogg": ogg_mutants,
    "opus": ogg_mutants,
    "mp3": mp3_mutants,
}


def generic(data: bytes, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    yield "cut", data[: rng.randrange(1, len(data))]
    raw = bytearray(data)
    for _ in range(rng.choice([1, 4, 16])):
        raw[rng.randrange(len(raw))] = rng.randrange(256)
    yield "flip", bytes(raw)


def mutants(n: int, seed: int = 0) -> Iterator[Mutant]:
    """``n`` mutants of the seeds, every container in turn, deterministic in ``seed``."""
    rng = random.Random(seed)
    base = seeds()
    names = sorted(base)
    made = 0
    while made < n:
        name = names[made % len(names)]
        ext = name.rsplit(".", 1)[1]
        makers = [_BY_EXT[ext], generic]
        options = [m for maker in makers for m in maker(base[name], rng)]
        kind, data = rng.choice(options)
        if rng.random() < 0.15:  # a second structural change on top of the first
            kind2, data = rng.choice(list(_BY_EXT[ext](data, rng)) or [(kind, data)])
            kind = f"{kind}+{kind2}"
        yield Mutant(f"m{made:05d}.{ext}", data, kind)
        made += 1


def named_cases(limit_s: float = 600.0) -> dict[str, tuple[bytes, str]]:
    """Issue 27's files: name -> (bytes, the outcome every face must give: "ok" or a code).

    ``limit_s``: the faces' duration limit; two files are just over it, one whose header
    says so truthfully, one (FLAC of unknown length, near-silent) only its samples."""
    x, rate = clip()
    low = x[::3]
    wav = encode(x, rate, "WAV", "PCM_16")
    chunks = riff_chunks(wav)
    fl = encode(x, rate, "FLAC")
    blocks, frames = flac_blocks(fl)
    info = blocks[0][1]
    mp3 = (AUDIO / "perch_testclip_10s_16k.mp3").read_bytes()
    at = mp3.find(b"Info")
    xing = bytearray(mp3)
    xing[at + 8 : at + 12] = struct.pack(">I", 2**31)
    id3 = bytearray(mp3)
    id3[9] = 10  # the ID3v2 tag declares 10 bytes; it holds 35
    ogg = encode(low, 16000, "OGG", "VORBIS")
    second = encode(x[::2][: 24000 * 2], 24000, "OGG", "VORBIS")  # another rate in link 2
    fmt = dict(chunks)[b"fmt "]
    hour_at_1hz = riff(
        [(b"fmt ", fmt[:4] + struct.pack("<II", 1, 2) + fmt[12:]), (b"data", b"\0\0" * 3600)]
    )
    n = int(limit_s * 4000) + 4000
    quiet = (np.random.default_rng(0).normal(0, 1e-4, n)).astype(np.float32)
    long_flac = flac_blocks(encode(quiet, 4000, "FLAC", "PCM_16"))
    return {
        "bad_wav_over_limit.wav": (encode(quiet, 4000, "WAV", "PCM_U8"), "audio_too_long"),
        "bad_flac_over_limit_unknown_length.flac": (
            flac([(0, streaminfo(long_flac[0][0][1], total=0)), *long_flac[0][1:]], long_flac[1]),
            "audio_too_long",
        ),
        "ok_flac_total_unknown.flac": (
            flac([(0, streaminfo(info, total=0)), *blocks[1:]], frames),
            "ok",
        ),
        "ok_ogg_chained.ogg": (ogg + second, "ok"),
        "ok_mp3_xing_lies.mp3": (bytes(xing), "ok"),
        "ok_mp3_id3_too_small.mp3": (bytes(id3), "ok"),
        "ok_wav_chunks_before_fmt.wav": (
            riff(
                [
                    (b"LIST", b"INFOISFT\x05\0\0\0test\0"),
                    (b"bext", bytes(602)),
                    (b"iXML", b"<BWFXML/>"),
                    *chunks,
                ]
            ),
            "ok",
        ),
        "ok_wav_rf64.wav": (encode(x, rate, "RF64", "PCM_16"), "ok"),
        "ok_wav_extensible.wav": (encode(np.stack([x, x], 1), rate, "WAVEX", "PCM_24"), "ok"),
        "ok_wav_8khz.wav": (encode(x[::6], 8000, "WAV", "PCM_16"), "ok"),
        "bad_wav_hour_at_1hz.wav": (hour_at_1hz, "unsupported_sample_rate"),
        "bad_flac_says_3hz.flac": (
            flac([(0, streaminfo(info, rate=3)), *blocks[1:]], frames),
            "unsupported_sample_rate",
        ),
        "bad_wav_2mhz.wav": (
            riff(
                [
                    (b"fmt ", fmt[:4] + struct.pack("<II", 2_000_000, 4_000_000) + fmt[12:]),
                    chunks[-1],
                ]
            ),
            "unsupported_sample_rate",
        ),
        "bad_empty.wav": (b"", "empty_audio"),
        "bad_text.wav": (b"field notes, not audio\n" * 40, "unsupported_audio_format"),
    }
