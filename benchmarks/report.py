"""What every benchmark ends with: the JSON record (command, machine, date) and a short table, printed last."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def cpu_name() -> str:
    """The CPU model and whether it has native bf16: speeds here differ ~4x between CPUs with and without it."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), platform.machine())
    return f"{name}, native bf16 {'yes' if ' avx512_bf16' in info or ' amx_bf16' in info else 'no'}"


def machine(gpu: str | None = None) -> str:
    return gpu or f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def finish(out: Path, rows: list[dict], columns: list[tuple[str, str, int]], gpu: str | None = None, **meta) -> dict:
    """Write {"meta", "rows"} to `out` and print the meta line and a table of `columns` (key, header, width)."""
    meta = {"command": "python " + " ".join([os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)] + sys.argv[1:]),
            "machine": machine(gpu), "date": time.strftime("%Y-%m-%d"), **meta}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(json.dumps(meta))
    print(" ".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (_, h, w) in enumerate(columns)))
    for r in rows:
        cells = ["-" if r.get(k) is None else str(r[k]) for k, _, _ in columns]
        print(" ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, (_, _, w)) in enumerate(zip(cells, columns))))
    return meta
