"""What an uploaded file is, read from its first bytes (never from its name)."""

from __future__ import annotations

SUFFIX = {"midi": ".mid", "wav": ".wav", "flac": ".flac", "ogg": ".ogg", "mp3": ".mp3"}
AUDIO = ("wav", "flac", "ogg", "mp3")


def _mp3_frame(head: bytes) -> bool:
    """An MPEG audio frame header: 11 sync bits, a valid version, layer and bitrate."""
    if len(head) < 3 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer, bitrate = (head[1] >> 3) & 3, (head[1] >> 1) & 3, head[2] >> 4
    return version != 1 and layer != 0 and bitrate not in (0, 15)


def sniff(data: bytes) -> str | None:
    """'midi', 'wav', 'flac', 'ogg' or 'mp3' from the file's magic bytes; None for anything else."""
    if data[:4] == b"MThd":
        return "midi"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:3] == b"ID3" or _mp3_frame(data[:3]):
        return "mp3"
    return None


def sniff_score(data: bytes) -> str | None:
    """The suffix a score upload gets: '.mid' for MIDI, '.musicxml' for uncompressed MusicXML, else None."""
    if data[:4] == b"MThd":
        return ".mid"
    head = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<?xml") and any(tag in head for tag in (b"<score-partwise", b"<score-timewise",
                                                                 b"<!DOCTYPE score")):
        return ".musicxml"
    return None
