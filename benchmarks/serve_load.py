"""Load test of `synthcheck serve` on loopback: N concurrent clients for D seconds, batching on vs off.

Each client holds one keep-alive connection and posts one image per request to /v1/detect, back to back.
The server runs in its own process (as deployed); clients share this process's event loop.

    python benchmarks/serve_load.py                       # 50 clients, 60 s, batching on and off
    python benchmarks/serve_load.py --clients 10 --duration 10 --modes batched

Prints a table last; writes JSON to benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "src" / "synthcheck" / "samples").glob("*.jpg"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(batching: bool, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "synthcheck.cli", "serve", "--port", str(port), "--no-ui",
           "--batching" if batching else "--no-batching"]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    for _ in range(400):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(log.read_text())
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError("server did not become ready")


async def client(url: str, images: list[tuple[str, bytes]], stop_at: float, offset: int, lat: list, errors: list):
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1)) as c:
        i = offset
        while time.perf_counter() < stop_at:
            name, data = images[i % len(images)]
            i += 1
            t0 = time.perf_counter()
            try:
                r = await c.post("/v1/detect", files={"files": (name, data, "image/jpeg")})
                if r.status_code != 200:
                    errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                    continue
            except httpx.HTTPError as e:
                errors.append(f"{type(e).__name__}: {e}")
                continue
            lat.append(time.perf_counter() - t0)


async def run_load(url: str, clients: int, duration: float, images) -> dict:
    lat: list[float] = []
    errors: list[str] = []
    # warm-up: a few requests so the first model call's start-up cost is not measured
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        for name, data in images[:4]:
            await c.post("/v1/detect", files={"files": (name, data)})
    t0 = time.perf_counter()
    stop_at = t0 + duration
    await asyncio.gather(*(client(url, images, stop_at, k, lat, errors) for k in range(clients)))
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {"requests": len(lat), "errors": len(errors), "error_examples": errors[:5], "wall_s": round(wall, 2),
            "throughput_rps": round(len(lat) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p90_ms": round(float(np.percentile(ms, 90)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
            "mean_ms": round(float(statistics.fmean(ms)), 1) if len(ms) else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--modes", default="batched,unbatched")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_load.json")
    args = ap.parse_args()
    images = [(p.name, p.read_bytes()) for p in SAMPLES if "cifake" in p.name]
    results = {}
    for mode in args.modes.split(","):
        port = free_port()
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"synthcheck-serve-{mode}.log"
        proc = start_server(mode == "batched", port, log)
        url = f"http://127.0.0.1:{port}"
        try:
            results[mode] = asyncio.run(run_load(url, args.clients, args.duration, images))
            results[mode]["server_alive"] = proc.poll() is None and httpx.get(url + "/healthz").status_code == 200
        finally:
            proc.terminate()
            proc.wait(10)
    meta = {"command": "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
            "clients": args.clients, "duration_s": args.duration, "image": "32x32 CIFAKE JPEG samples, one per request"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(json.dumps(meta))
    print(f"{'mode':<10} {'requests':>9} {'errors':>7} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} alive")
    for mode, r in results.items():
        print(f"{mode:<10} {r['requests']:>9} {r['errors']:>7} {r['throughput_rps']:>8} {r['p50_ms']:>8} "
              f"{r['p90_ms']:>8} {r['p99_ms']:>8} {r['server_alive']}")


if __name__ == "__main__":
    main()
