"""Probing and thumbnails over cached ranged S3 reads vs downloading the whole object first.

Against moto's S3 server (in this process, plain HTTP), for one generated H.264 clip:
baseline = one GET of the whole object, then probe/render from memory; measured = the
``RangeReader`` the worker uses (ranged GETs, LRU block cache). Prints time, GET requests
and bytes read for both, and the ratios.
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from collections.abc import Callable
from typing import Any

import av
import boto3
from botocore.config import Config
from PIL import Image

from bench.rounds import Ratios, quick
from services.files.video.processing import probe, render_thumbnails
from services.files.video.range_reader import RangeReader

BUCKET = "bench-video"
KEY = "users/bench/clip/content"


def make_clip(seconds: float, width: int, height: int, fps: int = 25) -> bytes:
    """A clip of noise frames (they do not compress away, so the file has a realistic size)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(fps * 2), "preset": "ultrafast"}
        noise = [Image.effect_noise((width, height), 60).convert("RGB") for _ in range(8)]
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_image(noise[i % len(noise)])
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


class CountingClient:
    """Counts GET requests and bytes received through a boto3 S3 client."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.gets = 0
        self.bytes = 0

    def get(self, **params: Any) -> bytes:
        self.gets += 1
        with self.client.get_object(Bucket=BUCKET, Key=KEY, **params)["Body"] as body:
            data = bytes(body.read())
        self.bytes += len(data)
        return data


def timed(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def measure(
    label: str, work: Callable[[Any], Any], client: Any, size: int, args: argparse.Namespace
) -> None:
    whole = CountingClient(client)
    ranged = CountingClient(client)

    def over_ranges() -> Any:
        reader = RangeReader(
            size,
            lambda start, end: ranged.get(Range=f"bytes={start}-{end}"),
            block_size=args.block_kib * 1024,
            cache_blocks=args.cache_blocks,
        )
        return work(reader)

    # Alternating rounds: the baseline and ours back to back, compared within each round.
    ratios = Ratios(f"{label}: ranged / whole-object time", lower_is_better=True, unit="s")
    base_times, ranged_times = [], []
    for _ in range(args.repeat):
        base_times.append(timed(lambda: work(io.BytesIO(whole.get()))))
        ranged_times.append(timed(over_ranges))
        print(ratios.add(ranged_times[-1], base_times[-1]))
    base_s, ranged_s = min(base_times), min(ranged_times)
    per_run = args.repeat
    print(
        f"{label:>13}: whole-object GET (baseline) {base_s * 1000:8.1f} ms, "
        f"{whole.gets // per_run} GET, {whole.bytes / per_run / 2**20:.2f} MiB"
    )
    print(
        f"{label:>13}: cached ranged reads        {ranged_s * 1000:8.1f} ms, "
        f"{ranged.gets // per_run} GETs, {ranged.bytes / per_run / 2**20:.2f} MiB"
    )
    print(
        f"{label:>13}: best-of ratio ranged/baseline: time {ranged_s / base_s:.2f}, "
        f"bytes {ranged.bytes / max(whole.bytes, 1):.3f}"
    )
    print(ratios.summary())


def run(args: argparse.Namespace) -> None:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        client = boto3.client(
            "s3",
            endpoint_url=f"http://{host}:{port}",
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            config=Config(signature_version="s3v4", s3={"payload_signing_enabled": False}),
        )
        client.create_bucket(Bucket=BUCKET)
        clip = make_clip(args.seconds, args.width, args.height)
        client.put_object(Bucket=BUCKET, Key=KEY, Body=clip)
        print(
            f"clip: {args.seconds:.0f} s {args.width}x{args.height} H.264, "
            f"{len(clip) / 2**20:.2f} MiB; block {args.block_kib} KiB, "
            f"cache {args.cache_blocks} blocks; {args.repeat} alternating rounds"
        )
        times = [args.seconds * f for f in (0.1, 0.5, 0.9)]

        measure("probe", probe, client, len(clip), args)
        measure("3 thumbnails", lambda f: render_thumbnails(f, times, 320), client, len(clip), args)
    finally:
        server.stop()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_video_probe", description=__doc__)
    parser.add_argument("--seconds", type=float, default=quick(10.0, 4.0))
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--block-kib", type=int, default=1024)
    parser.add_argument("--cache-blocks", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
