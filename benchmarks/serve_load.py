"""Load and fault benchmark of `pianolab serve` on 127.0.0.1 (issue 22): throughput and latency of MIDI
requests under concurrent clients, then a burst of malformed uploads interleaved with good ones.

Starts `pianolab serve` on a free loopback port with a fresh registry, prediction log and feature cache
(every upload's features are computed, as for new performances) (or drives
`--url`, which must be a loopback address), sends `--requests` MIDI uploads from `--clients` concurrent
async httpx clients (bounded also by `--max-seconds`), then `--burst` uploads alternating good and
malformed ones. `--audio DIR`: the good uploads are the recordings in DIR instead of MIDI files (each
transcribed by the server, on its GPU when it has one, then rated). Prints one JSON object; exit code 1
when a good request was not answered with 200, a bad one got anything but a 4xx JSON error, or any 5xx
came back.

    python benchmarks/serve_load.py [--model default] [--requests 400] [--clients 8] [--burst 200]
    python benchmarks/serve_load.py --audio renders/ --requests 200 --max-mb 20   (recordings, GPU machine)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

from pianolab.audio import AUDIO_SUFFIXES

REPO = Path(__file__).resolve().parents[1]
MIDI = sorted((REPO / "data" / "percepiano" / "midi").glob("*.mid"))


def malformed(i: int, good: bytes, max_mb: int) -> tuple[str, bytes, int]:
    """(file name, bytes, expected status) of the i-th malformed upload."""
    kinds = [("text.mid", b"not a midi file at all", 415), ("cut.mid", good[: len(good) // 3], 422),
             ("empty.mid", b"", 400), ("huge.mid", b"MThd" + bytes((max_mb + 1) * 2**20), 413),
             ("header.mid", b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\xff\xff\xff\xff", 422),
             ("noise.wav", b"RIFF\x10\x00\x00\x00WAVE" + os.urandom(64), 422)]
    return kinds[i % len(kinds)]


async def _one(client: httpx.AsyncClient, url: str, name: str, data: bytes, cid: str) -> tuple[int, float, dict]:
    start = time.perf_counter()
    r = await client.post(url + "/predict", files={"performance": (name, data, "application/octet-stream")},
                          headers={"X-Client-Id": cid})
    took = 1000 * (time.perf_counter() - start)
    try:
        body = r.json()
    except ValueError:
        body = {}
    return r.status_code, took, body


async def load(url: str, files: list[Path], requests: int, clients: int, max_seconds: float) -> dict:
    """`requests` good uploads of `files` from `clients` concurrent clients, stopped after `max_seconds`."""
    queue = [(p.name, p.read_bytes()) for p in (files * (requests // len(files) + 1))[:requests]]
    results, deadline = [], time.monotonic() + max_seconds

    async def worker(k: int, client: httpx.AsyncClient):
        while queue and time.monotonic() < deadline:
            name, data = queue.pop()
            results.append(await _one(client, url, name, data, f"load-{k}"))

    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=120) as client:
        await asyncio.gather(*(worker(k, client) for k in range(clients)))
    wall = time.perf_counter() - start
    lat = np.array([t for s, t, _ in results if s == 200])
    return {"sent": len(results), "ok": int(len(lat)), "errors": sum(s != 200 for s, _, _ in results),
            "wall_s": round(wall, 2), "throughput_rps": round(len(lat) / wall, 2),
            **{f"p{q}_ms": round(float(np.percentile(lat, q)), 1) for q in (50, 95, 99) if len(lat)}}


async def burst(url: str, files: list[Path], count: int, clients: int, max_mb: int) -> dict:
    """`count` uploads alternating good (`files`) and malformed, sent by `clients` concurrent clients."""
    good = [(p.name, p.read_bytes(), 200) for p in (files * (count // len(files) + 1))[: count // 2 + 1]]
    items = [good[i // 2] if i % 2 == 0 else malformed(i // 2, good[i // 2][1], max_mb) for i in range(count)]
    sem = asyncio.Semaphore(clients)

    async def send(i, item, client):
        async with sem:
            status, _, body = await _one(client, url, item[0], item[1], f"burst-{i % clients}")
            return item[2], status, body

    async with httpx.AsyncClient(timeout=120) as client:
        out = await asyncio.gather(*(send(i, it, client) for i, it in enumerate(items)))
    good_out = [(e, s) for e, s, _ in out if e == 200]
    bad_out = [(e, s, b) for e, s, b in out if e != 200]
    return {"good": len(good_out), "good_answered": sum(s == 200 for _, s in good_out),
            "bad": len(bad_out),
            "bad_as_expected": sum(s == e and set(b) == {"error", "status"} for e, s, b in bad_out),
            "bad_4xx_json": sum(400 <= s < 500 and "error" in b for _, s, b in bad_out),
            "server_errors": sum(s >= 500 for _, s, _ in out),
            "statuses": {str(k): int(v) for k, v in zip(*np.unique([s for _, s, _ in out], return_counts=True),
                                                        strict=True)}}


def start_server(model: str, workers: int, folder: Path, max_mb: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "pianolab", "serve", "--port", str(port), "--model", model,
                             "--registry", str(folder), "--workers", str(workers), "--max-mb", str(max_mb)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PIANOLAB_CACHE": str(folder / "cache")})  # features computed anew
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not start")


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "(no GPU)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a running server on 127.0.0.1 (default: start one)")
    ap.add_argument("--model", default="default", help="what the started server serves (alias, name or folder)")
    ap.add_argument("--workers", type=int, default=2, help="the started server's prediction workers")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--max-seconds", type=float, default=300)
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--audio", type=Path, help="a folder of recordings: the good uploads (default: MIDI files)")
    ap.add_argument("--max-mb", type=int, default=2, help="the started server's upload size limit")
    args = ap.parse_args()
    files = sorted(p for p in args.audio.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES) if args.audio else MIDI
    proc = None
    if args.url:
        if urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("--url must be a loopback address")
        url = args.url
    else:
        proc, url = start_server(args.model, args.workers, Path(tempfile.mkdtemp(prefix="pianolab-load-")),
                                 args.max_mb)
    try:
        for p in files[:5]:  # warm-up: imports, first feature computations (and the transcriber)
            httpx.post(url + "/predict", files={"performance": (p.name, p.read_bytes())}, timeout=120)
        health = httpx.get(url + "/health", timeout=10).json()
        res = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPU {gpu_name()}", "date":
               time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model": health["models"],
               "inputs": "recordings" if args.audio else "MIDI", "workers": args.workers, "clients": args.clients,
               "load": asyncio.run(load(url, files, args.requests, args.clients, args.max_seconds)),
               "burst": asyncio.run(burst(url, files, args.burst, args.clients, args.max_mb))}
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    print(json.dumps(res, indent=1))
    b = res["burst"]
    if res["load"]["errors"] or b["good_answered"] < b["good"] or b["server_errors"] or b["bad_as_expected"] < b["bad"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
