"""How raw PCM samples arrive on a live stream, named apart from the decoding (numpy) so
the command line offers the choices without loading it."""

from enum import StrEnum


class SampleEncoding(StrEnum):
    S16LE = "s16le"
    F32LE = "f32le"
