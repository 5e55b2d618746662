"""Model directories: `model.safetensors` + `config.json` (+ model card), written atomically, never pickled.

A model directory holds everything needed to reproduce a verdict: architecture,
preprocessing spec, threshold/temperature, data fingerprint, metrics, version.
Training state for `--resume` (optimizer, scheduler, RNG) is stored the same way:
tensors in safetensors, everything else in JSON.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .._version import __version__
from ..data.preprocess import PreprocessSpec
from ..data.store import save_json
from .registry import Classifier, model_from_arch

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRAIN_DIGESTS = "train_digests.safetensors"


def _atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_model(model: Classifier, directory: Path, config: dict) -> None:
    """Write weights then config; the config (written last) marks the directory complete."""
    directory = Path(directory)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    _atomic_save_tensors(state, directory / WEIGHTS, metadata={"format": "synthcheck", "version": __version__})
    config = dict(config)
    config.setdefault("synthcheck_version", __version__)
    save_json(directory / CONFIG, config)


def load_config(directory: Path) -> dict:
    path = Path(directory) / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{directory}: not a SynthCheck model directory (no {CONFIG})")
    return json.loads(path.read_text())


def load_model(directory: Path, map_location: str = "cpu") -> tuple[Classifier, dict]:
    """Rebuild the network from config.json and load safetensors weights (no pickle anywhere)."""
    directory = Path(directory)
    config = load_config(directory)
    model = model_from_arch(config["arch"])
    state = load_file(str(directory / WEIGHTS), device=map_location)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{directory}: weights do not match architecture {config['arch']['name']} "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval()
    return model, config


def spec_of(config: dict) -> PreprocessSpec:
    return PreprocessSpec.from_dict(config["preprocess"])


# --- training state for --resume ---------------------------------------------------------------

def _flatten(obj, prefix: str, tensors: dict, path=()) -> object:
    """Replace tensors in a nested structure by string references; collect them in `tensors`."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}{len(tensors)}"
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_flatten(k, prefix, tensors), _flatten(v, prefix, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten(v, prefix, tensors) for v in obj], "tuple": isinstance(obj, tuple)}
    return obj


def _unflatten(obj, tensors: dict):
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [_unflatten(v, tensors) for v in obj["__list__"]]
            return tuple(items) if obj.get("tuple") else items
    return obj


def save_state(directory: Path, state: dict) -> None:
    """Save a nested training state (state_dicts, RNG states, counters) as safetensors + JSON."""
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "t", tensors)
    _atomic_save_tensors(tensors, directory / "state.safetensors")
    save_json(directory / "state.json", skeleton)


def load_state(directory: Path) -> dict | None:
    directory = Path(directory)
    if not (directory / "state.json").exists() or not (directory / "state.safetensors").exists():
        return None
    tensors = load_file(str(directory / "state.safetensors"))
    return _unflatten(json.loads((directory / "state.json").read_text()), tensors)


def save_train_digests(directory: Path, digests) -> None:
    """Content digests of the training files, so evaluation can drop train-identical test files."""
    t = torch.as_tensor(digests[:, :8].copy())  # 64-bit prefixes: collisions are negligible at this scale
    _atomic_save_tensors({"digests": t}, Path(directory) / TRAIN_DIGESTS)


def load_train_digests(directory: Path) -> set[bytes]:
    path = Path(directory) / TRAIN_DIGESTS
    if not path.exists():
        return set()
    d = load_file(str(path))["digests"].numpy()
    return {row.tobytes() for row in d}
