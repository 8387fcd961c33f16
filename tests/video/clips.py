"""Small test videos encoded with PyAV (H.264 in MP4), optionally with audio or rotation."""

from __future__ import annotations

import io
import struct

import av
from PIL import Image


def make_clip(
    *,
    seconds: float = 2.0,
    fps: int = 25,
    width: int = 320,
    height: int = 240,
    audio: bool = False,
    gop: int = 25,
) -> bytes:
    """An H.264 MP4 whose frame ``i`` is a solid colour with red channel ``i * 5 % 256``."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"g": str(gop), "preset": "ultrafast"}
        sound = out.add_stream("aac", rate=44100) if audio else None
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_image(
                Image.new("RGB", (width, height), (i * 5 % 256, 90, 200))
            )
            frame.pts = i
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if sound is not None:
            samples = 1024
            for k in range(int(seconds * 44100 / samples)):
                chunk = av.AudioFrame(format="fltp", layout="stereo", samples=samples)
                for plane in chunk.planes:
                    plane.update(bytes(plane.buffer_size))
                chunk.sample_rate = 44100
                chunk.pts = k * samples
                for packet in sound.encode(chunk):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)
    return buffer.getvalue()


def rotate_clockwise(mp4: bytes, degrees: int) -> bytes:
    """Rewrite the first track header's display matrix so players turn the picture clockwise.

    PyAV cannot set display-matrix side data on an output stream, and FFmpeg's muxer no
    longer honours the ``rotate`` tag, so the matrix of the ``tkhd`` box is patched directly.
    """
    matrices = {
        90: (0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000),
        180: (-0x10000, 0, 0, 0, -0x10000, 0, 0, 0, 0x40000000),
        270: (0, -0x10000, 0, 0x10000, 0, 0, 0, 0, 0x40000000),
    }
    data = bytearray(mp4)
    box = data.find(b"tkhd")
    if box < 0 or data[box + 4] != 0:
        raise ValueError("expected a version-0 tkhd box")
    # type(4) version+flags(4) times/track/duration(20) reserved(8) layer..volume(8)
    offset = box + 4 + 4 + 20 + 8 + 8
    struct.pack_into(">9i", data, offset, *matrices[degrees])
    return bytes(data)
