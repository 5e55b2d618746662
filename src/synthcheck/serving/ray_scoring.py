"""Batch scoring of very large inputs on Ray Data (`synthcheck predict --engine ray`, extra `synthcheck[ray]`).

Files are cut into fixed shards in input order; Ray Data streams (shard, row, path) records through
`Detector` actors (`map_batches` with a callable class: the model loads once per actor, on CPU or
GPU) and the driver writes each shard as one Parquet file the moment its last row arrives, via a
temporary name, so a restart skips finished shards and re-scores only the rest. Each actor runs
exactly `Detector.predict`, and scoring is batch-invariant, so the results equal single-process
`predict` bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

PLAN = "_plan.json"
COLUMNS = ["source", "prob_ai", "verdict", "model", "error", "pixel_verdict", "reason", "evidence", "warnings"]


def read_manifest(path: Path) -> list[str]:
    """A list of images: .txt (one path per line) or .csv/.parquet with a `path` (or `source`) column."""
    path = Path(path)
    if path.suffix in (".csv", ".parquet"):
        import pandas as pd

        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        col = "path" if "path" in df.columns else "source" if "source" in df.columns else None
        if col is None:
            raise ValueError(f"{path}: a manifest table needs a 'path' (or 'source') column")
        return [str(p) for p in df[col].tolist()]
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def plan(files: list[str], shard_size: int) -> dict:
    fingerprint = hashlib.blake2b("\n".join(files).encode(), digest_size=12).hexdigest()
    return {"files": len(files), "shard_size": shard_size, "shards": -(-len(files) // shard_size),
            "fingerprint": fingerprint}


def shard_path(out: Path, i: int) -> Path:
    return out / f"part-{i:05d}.parquet"


class DetectorActor:
    """A Ray Data stateful actor: one Detector per actor, called on batches of paths."""

    def __init__(self, model: str | None, backend: str, precision: str, device: str, metadata: bool, threads: int):
        import torch

        from ..inference.detector import Detector

        torch.set_num_threads(max(1, threads))
        self.det = Detector.load(model, device=device, backend=backend, precision=precision)
        self.det.metadata = metadata

    def __call__(self, batch: dict) -> dict:
        preds = self.det.predict([str(p) for p in batch["source"]], batch_size=max(1, len(batch["source"])))
        rows = [p.to_dict() for p in preds]
        out = {"shard": batch["shard"], "row": batch["row"]}
        for c in COLUMNS:
            vals = [r[c] for r in rows]
            if c in ("evidence", "warnings"):
                vals = [json.dumps(v) for v in vals]
            if c == "prob_ai":
                out[c] = np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
            else:
                out[c] = np.array(["" if v is None else v for v in vals], dtype=object)
        return out


def predict_ray(files: list[str], out: Path, model: str | None = None, workers: int = 2, batch_size: int = 256,
                shard_size: int = 10_000, backend: str = "auto", precision: str = "auto", device: str = "cpu",
                gpus_per_worker: float = 0.0, metadata: bool = True, address: str | None = None,
                progress: bool = True) -> dict:
    """Score `files` into OUT/part-*.parquet; returns counts. Resumes: finished shards are never re-scored."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    p = plan(files, shard_size)
    plan_file = out / PLAN
    if plan_file.exists():
        old = json.loads(plan_file.read_text())
        if (old["fingerprint"], old["shard_size"]) != (p["fingerprint"], p["shard_size"]):
            raise ValueError(f"{out} holds results for a different input list or shard size; use a new --out")
    else:
        plan_file.write_text(json.dumps(p, indent=2))
    shards = [files[i:i + shard_size] for i in range(0, len(files), shard_size)]
    pending = [i for i in range(len(shards)) if not shard_path(out, i).exists()]
    done_before = len(shards) - len(pending)
    if not pending:
        return {**p, "scored_now": 0, "shards_skipped": done_before, "out": str(out)}

    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    cpus = ray.available_resources().get("CPU", 1)
    threads = max(1, int(cpus // max(1, workers)))
    records = [{"shard": i, "row": j, "source": f} for i in pending for j, f in enumerate(shards[i])]
    ds = ray.data.from_items(records)
    ds = ds.map_batches(DetectorActor, batch_size=batch_size, batch_format="numpy", concurrency=workers,
                        num_cpus=threads if gpus_per_worker == 0 else 1, num_gpus=gpus_per_worker or None,
                        fn_constructor_kwargs=dict(model=model, backend=backend, precision=precision, device=device,
                                                   metadata=metadata, threads=threads))
    buffers: dict[int, list] = {i: [] for i in pending}
    left = {i: len(shards[i]) for i in pending}
    bar = tqdm(total=len(records), unit="img", desc="scoring (ray)", disable=not progress)
    for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
        for shard, part in batch.groupby("shard"):
            shard = int(shard)
            buffers[shard].append(part)
            left[shard] -= len(part)
            if left[shard] == 0:
                import pandas as pd

                df = pd.concat(buffers.pop(shard)).sort_values("row")[COLUMNS].reset_index(drop=True)
                for c in ("model", "error", "verdict", "pixel_verdict", "reason"):
                    df[c] = df[c].replace("", None)
                tmp = shard_path(out, shard).with_suffix(".parquet.tmp")
                pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
                tmp.rename(shard_path(out, shard))
        bar.update(len(batch))
    bar.close()
    return {**p, "scored_now": len(records), "shards_skipped": done_before, "out": str(out)}


def read_results(out: Path):
    """All finished shards as one pandas DataFrame, in input order."""
    import pandas as pd

    parts = sorted(Path(out).glob("part-*.parquet"))
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    for c in COLUMNS:
        if c != "prob_ai":  # missing text as None (as `predict` writes it), not pandas' NA
            df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df
