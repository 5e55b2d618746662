"""Batched scoring of uint8 image tensors: the single model-call path for training, evaluation and prediction."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

from ..data.preprocess import identical_tiles
from ..models.registry import combine_tiles


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_threads() -> int:
    """Threads for CPU math: all cores, unless the user capped them with OMP_NUM_THREADS (two jobs sharing a
    machine each set it, so they do not fight over the same cores)."""
    capped = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, int(capped)) if capped.isdigit() else (os.cpu_count() or 1)


def autocast_for(device: torch.device, enabled: bool = True, cpu: bool = False):
    """bf16 autocast on CUDA; on CPU only when asked (`cpu=True`: ~2x faster training on AVX512-BF16/AMX
    cores, measured in BENCHMARKS.md); scoring on CPU stays fp32 so scores are stable and comparable."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if enabled and cpu and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_input(batch_u8: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 [N,3,H,W] -> float pixels in [0,1]; the model's InputAdapter does the rest."""
    x = batch_u8.float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def cpu_has_bf16() -> bool:
    """Native bf16 matmul/conv on this CPU (AVX512-BF16 or AMX); without it bf16 autocast is slower than fp32."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device: torch.device, backend: str = "torch") -> str:
    """"auto" -> what scores fastest at the measured accuracy: bf16 on GPUs and on CPUs with native bf16 (AMX or
    AVX512-BF16: 2-3x faster, same verdicts, BENCHMARKS.md), fp32 elsewhere (emulated bf16 is slower) and on the
    ONNX backend (fp32 only); OpenVINO like PyTorch."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "bf16" and backend == "openvino" and not cpu_has_bf16():
        raise ValueError("OpenVINO bf16 needs a CPU with native bf16 (AMX or AVX512-BF16); use --precision fp32")
    if precision != "auto":
        return precision
    if backend == "onnx":
        return "fp32"
    return "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()) else "fp32"


CPU_CHUNK = 64         # fp32
CPU_CHUNK_BF16 = 128   # bf16 gains ~4% more from the larger chunk


def tile_mean(score_flat, images, rule: str = "logit") -> np.ndarray:
    """[N,T,3,S,S] tiles -> one logit per image, the tiles' scores combined by the model's `rule`
    (`models.registry.combine_tiles`), each distinct tile scored once: an image no larger than one tile has T
    identical tiles (a 224 px crop under a 224 px tiles:3 model costs one pass, not 9)."""
    images = np.asarray(images) if not isinstance(images, np.ndarray) else images
    n, t = images.shape[:2]
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    same = identical_tiles(images)
    rows = [np.arange(t) if not same[i] else np.zeros(1, int) for i in range(n)]
    flat = np.concatenate([images[i, r] for i, r in enumerate(rows)])
    logits = score_flat(flat)
    out, at = np.empty(n, dtype=np.float32), 0
    for i, r in enumerate(rows):
        out[i] = combine_tiles(logits[at:at + len(r)], rule)
        at += len(r)
    return out


def cpu_chunk(side: int, bf16: bool = False) -> int:
    """Fixed CPU chunk: 64 (fp32) / 128 (bf16) images at 32 px, fewer for larger inputs so that a chunk's
    activations stay about as large (and a lone image is not padded to 64 full-size ones)."""
    base = CPU_CHUNK_BF16 if bf16 else CPU_CHUNK
    return max(4, min(base, base * 32 * 32 // (side * side)))


@torch.inference_mode()
def score_logits(model: torch.nn.Module, images, batch_size: int = 512, device: torch.device | None = None,
                 amp: bool = True, cpu_bf16: bool = False, min_chunk: int = 1) -> np.ndarray:
    """Logits for uint8 images given as a numpy array or tensor [N,3,H,W], or [N,T,3,H,W] tiles
    (one logit per image: its tiles' logits combined by the model's `tile_rule`).

    CUDA: bf16 autocast and channels-last when `amp`. CPU: fp32 unless `cpu_bf16` (bf16 autocast +
    channels-last, ~2.6x faster on AMX cores, scores differ from fp32 by ~1e-3; see BENCHMARKS.md).

    Batch-invariant: every chunk is padded to the same size, so an image's logit is bit-identical
    whichever batch it arrives in (conv kernels pick different algorithms for different batch sizes,
    ~1e-5 apart otherwise). That is what lets `predict`, the server and Ray agree exactly.

    Tiles run in CPU chunks of at least one image's tiles (`min_chunk`): the photo model's 16 tiles of 128 px
    score 1.6x faster in fp32 and 1.15x in bf16 in chunks of 16 than of 4/8 (benchmarks/photo_throughput.py),
    and a lone image still needs no padding.
    """
    if getattr(images, "ndim", 4) == 5:  # tiles: score every tile, combine them per image
        t = images.shape[1]
        return tile_mean(lambda flat: score_logits(model, flat, batch_size, device, amp, cpu_bf16, t), images,
                         getattr(model, "tile_rule", "logit"))
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    cl = device.type == "cuda" or (cpu_bf16 and device.type == "cpu")
    if device.type == "cpu":
        # Activations of small chunks stay in cache: for the default model on 2 cores, fp32 scores 2,740 img/s
        # in chunks of 64 vs 2,130 in 256; bf16 8,488 in 128 vs 5,717 in 1024 (BENCHMARKS.md). Small
        # chunks also keep the padding of a lone image (a server request) cheap.
        batch_size = min(batch_size, max(cpu_chunk(images.shape[-1], cpu_bf16), min_chunk))
    out = []
    n = len(images)
    for i in range(0, n, batch_size):
        xb = torch.as_tensor(images[i:i + batch_size]).to(device, non_blocking=True)
        k = len(xb)
        if k < batch_size:
            xb = torch.cat([xb, xb.new_zeros((batch_size - k, *xb.shape[1:]))])
        with autocast_for(device, amp or cpu_bf16, cpu=cpu_bf16):
            out.append(model(to_input(xb, cl))[:k].float().cpu())
    if was_training:
        model.train()
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def score_with_features(model: torch.nn.Module, images, batch_size: int = 512, device: torch.device | None = None,
                        amp: bool = True, cpu_bf16: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`score_logits` plus each image's attribution features (`models.features`: stage channel means, for tiles
    their mean and std over the tiles), read by forward hooks from the same pass: no extra pass."""
    from ..models.features import FeatureTap, aggregate

    images = images if isinstance(images, torch.Tensor) else np.asarray(images)
    with FeatureTap(model) as tap:
        if images.ndim == 5:  # the same tile_mean as score_logits: identical logits
            flat_feats: list[np.ndarray] = []

            def score_flat(flat):
                out = score_logits(model, flat, batch_size, device, amp, cpu_bf16, images.shape[1])
                flat_feats.append(_kept(tap.calls, len(flat)))
                tap.calls.clear()
                return out

            logits = tile_mean(score_flat, images, getattr(model, "tile_rule", "logit"))
            return logits, aggregate(flat_feats[0] if flat_feats else np.zeros((0, 0), np.float32), images)
        logits = score_logits(model, images, batch_size, device, amp, cpu_bf16)
        return logits, aggregate(_kept(tap.calls, len(images)), images)


def _kept(store: list[torch.Tensor], n: int) -> np.ndarray:
    """The hook saw padded chunks (batch invariance): keep the first n rows in order."""
    chunks, left = [], n
    for t in store:  # every chunk but the last is full; the last one's real rows come first
        take = min(len(t), left)
        chunks.append(t[:take])
        left -= take
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), np.float32)
