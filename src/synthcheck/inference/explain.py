"""Why a verdict: Grad-CAM, LIME, SHAP (all through captum) and the frequency spectrum.

Every method explains the model's one logit (positive = pushes towards "AI") on
exactly the pixels the model saw: the uint8 tensor from `preprocess.load_image`,
so what is explained is what was scored. Attribution maps come back at the
model's input size; `render` upsamples small inputs with nearest-neighbour so
pixels stay visible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.preprocess import ImageError, ImageSource, decode_image, tile_boxes, tiling_canvas
from ..models.registry import combine_tiles
from .prediction import _source_name

METHODS = ("gradcam", "gradcampp", "lime", "shap", "spectrum")


@dataclass
class Explanation:
    method: str
    source: str
    prob_ai: float
    verdict: str
    image: np.ndarray              # HxWx3 uint8: the pixels the model saw (spectrum: the native-resolution crop)
    attribution: np.ndarray        # HxW float: heatmap (spectrum: log power of the noise residual, fftshifted)
    seconds: float
    details: dict = field(default_factory=dict)


# --- superpixels for the perturbation methods ------------------------------------------------------

def default_segments(size: int) -> int:
    """Superpixel count: ~1 segment per 4x4 pixels at 32 px (64), capped at 100 for full-size inputs."""
    return int(min(100, max(16, (size // 4) ** 2)))


def superpixels(image: np.ndarray, n_segments: int) -> np.ndarray:
    """SLIC superpixels (scikit-image) as an HxW int64 mask numbered 0..K-1."""
    from skimage.segmentation import slic

    seg = slic(image, n_segments=n_segments, compactness=10.0, start_label=0, channel_axis=-1)
    _, seg = np.unique(seg, return_inverse=True)
    seg = seg.reshape(image.shape[:2]).astype(np.int64)
    if seg.max() + 1 < max(4, n_segments // 4):
        # SLIC merges everything on noise-like images; a regular grid still localises the evidence
        h, w = image.shape[:2]
        side = max(1, int(round(np.sqrt(n_segments))))
        rows = np.minimum(np.arange(h) * side // h, side - 1)
        cols = np.minimum(np.arange(w) * side // w, side - 1)
        seg = (rows[:, None] * side + cols[None, :]).astype(np.int64)
    return seg


def default_samples(method: str, size: int, n_tiles: int = 1) -> int:
    """Perturbation samples: several per segment (KernelSHAP's regression needs more samples than segments);
    a tiled model pays one pass per tile per sample, so whole images get fewer. Costs are in BENCHMARKS.md."""
    if n_tiles > 1:
        return 200
    return 300 if size <= 64 else 600


# --- methods -----------------------------------------------------------------------------------

def _pixels(image_u8: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(image_u8).permute(2, 0, 1).unsqueeze(0).float().div(255.0).to(device)


def gradcam(model, image_u8: np.ndarray, towards_ai: bool = True) -> np.ndarray:
    """Grad-CAM (Selvaraju et al., 2017) on the model's last convolutional stage, upsampled to the input.

    A one-logit model has two classes: the map is computed for the logit
    (evidence for AI) or its negation (evidence for real), so an image called
    real shows what made it look real rather than an empty map.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    device = next(model.parameters()).device
    x = _pixels(image_u8, device).requires_grad_(True)
    sign = 1.0 if towards_ai else -1.0
    with torch.enable_grad():
        cam = LayerGradCam(lambda inp: sign * model(inp), model.get_target_layer()).attribute(x, relu_attributions=True)
    cam = LayerAttribution.interpolate(cam, tuple(image_u8.shape[:2]), interpolate_mode="bilinear")
    return cam[0, 0].detach().cpu().numpy()


def gradcam_pp(model, image_u8: np.ndarray, towards_ai: bool = True) -> np.ndarray:
    """Grad-CAM++ (Chattopadhay et al., 2018): pixel-weighted gradients, better when evidence is spread out.

    Own code because captum has no Grad-CAM++; it uses the same target layer and
    class convention as `gradcam`.
    """
    device = next(model.parameters()).device
    x = _pixels(image_u8, device)
    store = {}

    def hook(_module, _inp, out):
        store["act"] = out
        return out.clone()  # downstream in-place ops (ReLU(inplace=True)) must not touch the stored activation

    handle = model.get_target_layer().register_forward_hook(hook)
    try:
        with torch.enable_grad():
            score = (1.0 if towards_ai else -1.0) * model(x).sum()
            act = store["act"]
            (g,) = torch.autograd.grad(score, act)
    finally:
        handle.remove()
    act, g = act.detach(), g.detach()
    g2, g3 = g.pow(2), g.pow(3)
    denom = 2 * g2 + act.sum(dim=(2, 3), keepdim=True) * g3
    alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
    weights = (alpha * torch.relu(g)).sum(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * act).sum(dim=1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=tuple(image_u8.shape[:2]), mode="bilinear", align_corners=False)
    return cam[0, 0].cpu().numpy()


def _perturbation(method: str, model, image_u8: np.ndarray, n_samples: int, n_segments: int, progress: bool):
    from captum.attr import KernelShap, Lime

    device = next(model.parameters()).device
    x = _pixels(image_u8, device)
    mask = superpixels(image_u8, n_segments)
    model = model.eval()
    baseline = x.mean(dim=(2, 3), keepdim=True).expand_as(x)  # "removed" segments take the image's mean colour
    explainer = (Lime if method == "lime" else KernelShap)(model)
    # captum samples from torch's global RNG: fork it and seed, so the same image gets the same explanation
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        attr = explainer.attribute(x, baselines=baseline, feature_mask=torch.from_numpy(mask).to(device)[None, None]
                                   .expand(1, 3, *mask.shape), n_samples=n_samples, perturbations_per_eval=64,
                                   show_progress=progress)
    return attr[0, 0].detach().cpu().numpy(), {"segments": int(mask.max() + 1), "samples": n_samples}


# --- whole images under tiled models: the tile maps placed back where the tiles were ----------------

class TileMean(torch.nn.Module):
    """A whole image -> its tiles' logits combined, exactly as a tiled model scores it (for LIME/SHAP over the
    whole picture: removing a superpixel changes every tile that holds part of it)."""

    def __init__(self, model, boxes: list[tuple[int, int]], size: int):
        super().__init__()
        self.model, self.boxes, self.size = model, boxes, size

    def forward(self, x):
        s = self.size
        tiles = torch.stack([x[:, :, y:y + s, l:l + s] for y, l in self.boxes], 1)  # [B,T,3,s,s]
        b, t = tiles.shape[:2]
        return combine_tiles(self.model(tiles.reshape(b * t, *tiles.shape[2:])).reshape(b, t),
                             getattr(self.model, "tile_rule", "logit"))


def stitch(maps: np.ndarray, boxes: list[tuple[int, int]], height: int, width: int) -> np.ndarray:
    """Tile maps [T,s,s] -> one HxW map: each pixel the mean over the tiles that hold it, NaN where no tile
    reached (the model never saw those pixels)."""
    total = np.zeros((height, width))
    count = np.zeros((height, width))
    s = maps.shape[-1]
    for m, (y, x) in zip(maps, boxes):
        total[y:y + s, x:x + s] += m
        count[y:y + s, x:x + s] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def tiled_cam(model, canvas: np.ndarray, boxes: list[tuple[int, int]], size: int, towards_ai: bool,
              plus: bool = False) -> np.ndarray:
    """Grad-CAM (or ++) of every tile, each towards the image's verdict, stitched over the whole image."""
    fn = gradcam_pp if plus else gradcam
    maps = np.stack([fn(model, np.ascontiguousarray(canvas[y:y + size, x:x + size]), towards_ai) for y, x in boxes])
    return stitch(maps, boxes, *canvas.shape[:2])


def tiled_perturbation(method: str, model, canvas: np.ndarray, boxes: list[tuple[int, int]], size: int,
                       n_samples: int, n_segments: int, progress: bool):
    """LIME / KernelSHAP over superpixels of the whole image, scored as the tiled model scores it."""
    attr, details = _perturbation(method, TileMean(model, boxes, size), canvas, n_samples, n_segments, progress)
    covered = stitch(np.ones((len(boxes), size, size)), boxes, *canvas.shape[:2])
    return np.where(np.isnan(covered), np.nan, attr), details


def native_crop(image_u8: np.ndarray, max_size: int = 512) -> np.ndarray:
    """Largest centred square up to `max_size`, at native resolution: the spectrum's evidence is never resampled."""
    h, w = image_u8.shape[:2]
    s = min(h, w, max_size)
    top, left = (h - s) // 2, (w - s) // 2
    return np.ascontiguousarray(image_u8[top:top + s, left:left + s])


def spectrum(image_u8: np.ndarray) -> np.ndarray:
    """Log power spectrum of the noise residual (image minus its 3x3 median), fftshifted.

    The residual removes image content so periodic upsampling artifacts of
    generators stand out as peaks away from the centre.
    """
    from scipy.ndimage import median_filter

    gray = image_u8.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    residual = gray - median_filter(gray, size=3, mode="reflect")
    f = np.fft.fftshift(np.fft.fft2(residual - residual.mean()))
    return np.log1p(np.abs(f) ** 2 / residual.size)


def class_spectra(images: np.ndarray, labels: np.ndarray, progress: bool = True) -> dict:
    """Mean residual spectrum of real and of AI images (uint8 [N,3,S,S]) and their difference."""
    from tqdm.auto import tqdm

    sums = {0: None, 1: None}
    counts = {0: 0, 1: 0}
    for img, y in tqdm(zip(images, labels), total=len(labels), desc="spectra", unit="img", disable=not progress):
        sp = spectrum(img.transpose(1, 2, 0))
        y = int(y)
        sums[y] = sp if sums[y] is None else sums[y] + sp
        counts[y] += 1
    if not counts[0] or not counts[1]:
        raise ValueError("class spectra need both real and AI images")
    real, ai = sums[0] / counts[0], sums[1] / counts[1]
    return {"real": real, "ai": ai, "difference": ai - real, "n_real": counts[0], "n_ai": counts[1]}


# --- rendering ---------------------------------------------------------------------------------

def _upscale_factor(size: int) -> int:
    return max(1, 256 // size) if size < 256 else 1


def render(expl: Explanation, path, reference: dict | None = None):
    """One PNG: original | heatmap | overlay (spectrum: image | its spectrum | class references), score in the title.

    `path` is a file path or a binary buffer (the server renders to memory). Uses matplotlib's Figure
    directly, not pyplot, so that concurrent renders on server threads share no global state.
    """
    from matplotlib.figure import Figure

    if isinstance(path, (str, Path)):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    img = expl.image
    k = _upscale_factor(img.shape[0])
    big = np.kron(img, np.ones((k, k, 1), dtype=np.uint8)) if k > 1 else img  # nearest-neighbour
    title = f"{Path(expl.source).name}: P(AI) = {expl.prob_ai:.3f} → {expl.verdict}  [{expl.method}]"
    if expl.method == "spectrum":
        panels = [("image (native crop)", big, None), ("residual log-power spectrum", expl.attribution, "magma")]
        if reference is not None:
            panels += [("mean real", reference["real"], "magma"), ("mean AI", reference["ai"], "magma"),
                       ("AI − real", reference["difference"], "coolwarm")]
        fig = Figure(figsize=(3.2 * len(panels), 3.6))
        axes = fig.subplots(1, len(panels))
        for ax, (name, data, cmap) in zip(np.atleast_1d(axes), panels):
            extent = None if cmap is None else (-0.5, 0.5, -0.5, 0.5)  # cycles/pixel: any image size compares
            if cmap == "coolwarm":
                lim = float(np.abs(data).max()) or 1.0
                ax.imshow(data, cmap=cmap, vmin=-lim, vmax=lim, extent=extent)
            else:
                ax.imshow(data, cmap=cmap, extent=extent, interpolation="nearest")
            ax.set_title(name, fontsize=9)
            ax.axis("off")
    else:
        a = expl.attribution
        a_big = np.kron(a, np.ones((k, k))) if k > 1 else a
        signed = expl.method in ("lime", "shap")
        lim = float(np.nanmax(np.abs(a))) if np.isfinite(a).any() else 1.0
        lim = lim or 1.0
        fig = Figure(figsize=(10, 3.6))
        axes = fig.subplots(1, 3)
        whole = expl.details.get("tiles")
        axes[0].imshow(big, interpolation="nearest" if k > 1 else "antialiased")
        axes[0].set_title(f"whole image ({whole} tiles, maps placed back)" if whole else "input (as the model saw it)",
                          fontsize=9)
        cmap, vmin = ("coolwarm", -lim) if signed else ("jet", 0.0)
        im = axes[1].imshow(a_big, cmap=cmap, vmin=vmin, vmax=lim, interpolation="nearest")
        cam_title = f"{'Grad-CAM++' if expl.method == 'gradcampp' else 'Grad-CAM'}: evidence for {'AI' if expl.details.get('towards_ai', True) else 'real'}"
        axes[1].set_title("towards AI (red) / real (blue)" if signed else cam_title, fontsize=9)
        fig.colorbar(im, ax=axes[1], fraction=0.046)
        axes[2].imshow(big, interpolation="nearest")
        axes[2].imshow(a_big, cmap=cmap, vmin=vmin, vmax=lim, alpha=0.5, interpolation="nearest")
        axes[2].set_title("overlay", fontsize=9)
        for ax in axes:
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    return path


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


# --- a Detector's verdict explained ------------------------------------------------------------

def explain_image(det, source: ImageSource, methods: Sequence[str] = ("gradcam",), name: str | None = None,
                  n_samples: int | None = None, n_segments: int | None = None, progress: bool = False) -> list:
    """`Detector.explain`: one image's verdict explained by `det` with each method in `methods` (see `METHODS`).

    Raises ImageError (naming the input and the problem) when the input cannot be scored.
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown explanation method(s) {sorted(unknown)}; choose from {', '.join(METHODS)}")
    name = name or _source_name(source, 0)
    d = det.decode((source, name))
    if "error" in d:
        raise ImageError(name, d["error"])
    return explain_decoded(d["detector"], d, name, methods, n_samples, n_segments, progress)


def explain_decoded(det, d: dict, name: str, methods: Sequence[str], n_samples: int | None,
                    n_segments: int | None, progress: bool) -> list:
    """The explanations of one input already decoded by `det` (the model that scores it)."""
    pixels = d["pixels"]
    whole = None
    if pixels.ndim == 4:  # tiles: the verdict is their mean logit; explain the whole image, tile maps placed back
        p = float(det.calibrated(np.array([det.logits(pixels).mean()]))[0])
        canvas = tiling_canvas(decode_image(d["data"], name, max_pixels=det.max_pixels), det.spec.image_size)
        whole = (canvas, tile_boxes(*canvas.shape[:2], det.spec.image_size, det.spec.tiles))
        seen = canvas
    else:
        p = float(det.probabilities_from_arrays(pixels[None])[0])
        seen = pixels.transpose(1, 2, 0)
    pred = det.make_prediction(name, d, p)
    size = det.spec.image_size
    out = []
    for m in methods:
        details: dict = {}
        image = seen
        if m in ("gradcam", "gradcampp"):
            towards_ai = pred.prob_ai >= det.threshold
            if whole:
                attr, sec = timed(tiled_cam, det.model, *whole, size, towards_ai, m == "gradcampp")
            else:
                attr, sec = timed(gradcam if m == "gradcam" else gradcam_pp, det.model, seen, towards_ai)
            details.update(layer=det.model.target_layer, towards_ai=towards_ai)
        elif m in ("lime", "shap"):
            n_tiles = len(whole[1]) if whole else 1
            samples = n_samples or default_samples(m, size, n_tiles)
            segments = n_segments or (64 if whole else default_segments(size))
            if whole:
                (attr, details), sec = timed(tiled_perturbation, m, det.model, *whole, size, samples,
                                             segments, progress)
            else:
                (attr, details), sec = timed(_perturbation, m, det.model, seen, samples, segments, progress)
        else:  # spectrum: native pixels, never resampled
            image = native_crop(decode_image(d["data"], name, max_pixels=det.max_pixels))
            attr, sec = timed(spectrum, image)
        if whole and m != "spectrum":
            details["tiles"] = len(whole[1])
        out.append(Explanation(m, name, pred.prob_ai, pred.verdict, image, attr, sec, details))
    return out
