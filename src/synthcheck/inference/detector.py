"""`Detector`: the one public object (load, predict) that the CLI, the REST API and the web page all call."""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from ..data.preprocess import DEFAULT_MAX_PIXELS, ImageError, ImageSource, decode_image, fit, load_image
from ..models.bundled import DEFAULT_MODEL, bundled_models, resolve_model
from ..models.checkpoint import load_config, load_model, spec_of
from ..models.registry import fold_batchnorm
from .calibration import probabilities
from .metadata import combine_verdict, inspect
from .prediction import Prediction, _source_name, describe_range, score_reading, stack_decoded, uncertain_range
from .scoring import cpu_threads, pick_device, resolve_precision, score_logits

AUTO = "auto"              # what no model name means: each image goes to the bundled model made for its size
AUTO_MEMBERS = ("default", "photo")
BACKENDS = ("auto", "torch", "onnx", "openvino")  # auto may also pick "openvino+onnx"
SPECTRA = "spectra.safetensors"  # mean residual spectra of the training classes, for `explain --method spectrum`


class Detector:
    """A trained model with its preprocessing, calibration and operating point."""

    def __init__(self, model: torch.nn.Module | Callable[[], torch.nn.Module], config: dict, model_id: str,
                 device: str | torch.device = "cpu", directory: Path | None = None, backend: str = "auto",
                 precision: str = "auto"):
        """`model`: the network, or a function that builds it; a detector that scores on ONNX Runtime builds
        its PyTorch network only when something needs it (explanations, robustness): start-up stays short."""
        self.directory = directory
        self.device = pick_device(str(device))
        self._model, self._build = None, (model if not isinstance(model, torch.nn.Module) else (lambda: model))
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        self._onnx = None
        if backend == "auto":
            from .export import fast_cpu_scorer

            self._onnx = fast_cpu_scorer(config, directory, self.device, precision)
            backend = self._onnx.backend if self._onnx is not None else "torch"
        precision = resolve_precision(precision, self.device, backend)  # "auto": bf16 where the CPU has it
        self.backend, self.precision = backend, (self._onnx.precision if self._onnx is not None else precision)
        if backend in ("onnx", "openvino") and self._onnx is None:
            from .export import ONNX_FILE, OnnxScorer, OpenVinoScorer

            path = directory / ONNX_FILE if directory is not None else None
            if path is None or not path.exists():
                raise FileNotFoundError(f"no {ONNX_FILE} in {directory}: run `synthcheck export {directory} --onnx` first")
            if backend == "onnx" and precision != "fp32":
                raise ValueError("the ONNX backend scores in fp32 only")
            self._onnx = OnnxScorer(path) if backend == "onnx" else OpenVinoScorer(path, precision)
        self.config = config
        if self._onnx is None:
            self.model  # PyTorch scores: build it now, so a bad weights file fails at load
        self.model_id = model_id
        self.spec = spec_of(config)
        self.temperature = float(config.get("temperature", 1.0))
        self.logit_shift = float(config.get("logit_shift", 0.0))  # P(AI) = sigmoid((logit - shift) / T)
        self.threshold = float(config.get("threshold", 0.5))
        self.uncertain_band = float(config.get("uncertain_band", 0.0))
        self.uncertain_range = uncertain_range(config)
        self.reading = config.get("unseen_reading")  # what a score meant on unseen sources (crossval models only)
        from ..models.features import FEATURES
        from .attribution import AttributionHead

        self.attribution = AttributionHead.load(directory) if directory is not None else None
        if self.attribution is not None and self.attribution.info.get("features") != FEATURES:
            import warnings

            warnings.warn(f"{directory}: its attribution head was fitted on older image features; refit it with "
                          "`synthcheck attribution` (generators are named from metadata only until then)")
            self.attribution = None
        # file inputs: metadata evidence, and the JPEG re-save trace too (pixel work, ~2 ms per 512-px image)
        self.max_pixels, self.metadata, self.resave_check = DEFAULT_MAX_PIXELS, True, False

    @property
    def model(self) -> torch.nn.Module:
        """The PyTorch network, batch norm folded, on the device (channels-last for CPU bf16)."""
        if self._model is None:
            net = fold_batchnorm(self._build()).to(self.device).eval()  # a Detector only scores and explains
            if self.precision == "bf16" and self.device.type == "cpu":
                net = net.to(memory_format=torch.channels_last)
            self._model, self._build = net, None
        return self._model

    @classmethod
    def load(cls, name_or_path: str | Path | None = None, device: str = "cpu", backend: str = "auto",
             precision: str = "auto") -> "Detector":
        """Load a model directory or a bundled model by name. None (or "auto") gives `AutoDetector`: the
        bundled CIFAKE-sized and photo models, each image scored by the one made for its size.

        backend "onnx" scores with ONNX Runtime from the directory's model.onnx (explanations still use
        the PyTorch weights); precision "bf16" scores in bf16 autocast on CPU or GPU, "fp32" in fp32, "auto" (the
        default) picks bf16 on GPUs and on CPUs with native bf16 (AMX/AVX512-BF16), fp32 elsewhere.
        """
        if name_or_path is None or str(name_or_path) == AUTO:
            members = [m for m in AUTO_MEMBERS if m in bundled_models()]
            if len(members) > 1:
                return AutoDetector({m: (lambda m=m: cls.load(m, device, backend, precision)) for m in members},
                                    {m: load_config(resolve_model(m)) for m in members}, device, backend, precision)
            name_or_path = DEFAULT_MODEL
        directory = resolve_model(name_or_path)
        config = load_config(directory)
        bundled = {v.resolve(): k for k, v in bundled_models().items()}
        model_id = bundled.get(directory.resolve(), str(directory))
        model_id = f"{model_id}:{config['arch']['name']}"
        if str(device) == "cpu":
            torch.set_num_threads(cpu_threads())
        return cls(lambda: load_model(directory, map_location="cpu")[0], config, model_id, device, directory,
                   backend, precision)

    # --- the pipeline: source -> uint8 -> logits -> calibrated probability -> verdict ------------

    def preprocess(self, source: ImageSource, name: str | None = None) -> np.ndarray:
        return load_image(source, self.spec, name=name, max_pixels=self.max_pixels)

    def domain_warnings(self, height: int, width: int) -> list[str]:
        """Out-of-domain warning when the model cannot see the input as it saw its training images. Tiles are
        native pixels wherever they fall, so a tiled model warns only when the image had to be enlarged (16:9 and
        3:2 photos are seen as trained); a whole-image model on size or aspect far from its training images'."""
        if self.spec.resize_policy == "tiles":
            return [f"out of domain: image is {width}x{height}, smaller than the model's {self.spec.image_size} px "
                    "tiles, so it was enlarged to score it; its score is less reliable here"] \
                if min(height, width) < self.spec.image_size else []
        stats = self.config.get("data", {}).get("image_sizes")
        short, long_ = min(height, width), max(height, width)
        if stats and (long_ > 4 * stats["long_side_p99"] or short < stats["short_side_p01"] / 2):
            return [f"out of domain: image is {width}x{height} but the model was trained on images of "
                    f"{stats['short_side_p01']}-{stats['long_side_p99']} px; its score is less reliable here"]
        if stats and long_ / max(short, 1) > 1.5 * max(stats["aspect_p99"], 1.0):
            return [f"out of domain: aspect ratio {long_ / max(short, 1):.2f} is far from the training images'"]
        return []

    def logits(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Raw logits for uint8 [N,3,S,S] arrays already preprocessed, on the chosen backend."""
        if self._onnx is not None:
            return self._onnx(images, batch_size)
        # CUDA always scores in bf16 autocast (as evaluation did); CPU in fp32 unless bf16 is asked for
        return score_logits(self.model, images, batch_size, self.device, amp=True, cpu_bf16=self.precision == "bf16")

    def probabilities_from_arrays(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Calibrated P(AI) for uint8 [N,3,S,S] arrays already preprocessed."""
        return self.calibrated(self.logits(images, batch_size))

    def calibrated(self, logits: np.ndarray) -> np.ndarray:
        """Logits -> calibrated P(AI): sigmoid((logit - logit_shift) / temperature)."""
        return probabilities(np.asarray(logits, dtype=np.float64) - self.logit_shift, self.temperature)

    def verdict(self, prob: float) -> str:
        low, high = self.uncertain_range
        if prob >= high:
            return "ai"
        return "real" if prob <= low else "uncertain"

    def predict(self, images: ImageSource | Sequence[ImageSource], names: Sequence[str] | None = None,
                batch_size: int = 256) -> list[Prediction]:
        """Score images (paths, bytes, PIL images or arrays); bad inputs get `error`, never an exception."""
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        return list(self.predict_iter(items, names=names, batch_size=batch_size))

    def predict_iter(self, sources: Iterable[ImageSource], names: Iterable[str] | None = None, batch_size: int = 256,
                     workers: int | None = None, prefetch: int = 2) -> Iterator[Prediction]:
        """Stream predictions in input order, pipelined: while one batch is scored, the next `prefetch`
        batches decode on `workers` threads (in chunks, to keep per-task overhead low).

        Memory stays flat however many files are given (at most prefetch + 1 batches in flight).
        """
        workers = workers or os.cpu_count() or 1
        names_it = iter(names) if names is not None else None
        chunk = max(8, batch_size // (2 * workers))

        def submit(batch):
            return batch, [pool.submit(self._decode_many, batch[i:i + chunk]) for i in range(0, len(batch), chunk)]

        with ThreadPoolExecutor(workers, thread_name_prefix="synthcheck-decode") as pool:
            pending: deque = deque()
            batch: list[tuple[ImageSource, str]] = []
            for i, src in enumerate(sources):
                name = next(names_it) if names_it is not None else _source_name(src, i)
                batch.append((src, name))
                if len(batch) >= batch_size:
                    pending.append(submit(batch))
                    batch = []
                    if len(pending) > prefetch:
                        yield from self._score_batch(*pending.popleft())
            if batch:
                pending.append(submit(batch))
            while pending:
                yield from self._score_batch(*pending.popleft())

    def _decode_many(self, items: list) -> list[dict]:
        return [self.decode(item) for item in items]

    def _score_batch(self, batch, futures) -> Iterator[Prediction]:
        decoded = [d for f in futures for d in f.result()]
        yield from self.predictions([name for _, name in batch], decoded, self.score_decoded(decoded))

    def predictions(self, names: Sequence[str], decoded: list[dict], probs: np.ndarray) -> Iterator[Prediction]:
        """Decoded inputs + P(AI) of the readable ones (in order, as `stack_decoded` stacked them) -> Predictions.

        The one place a batch becomes verdicts: `predict_iter` and the server both end here.
        """
        it = iter(probs)
        for name, d in zip(names, decoded):
            if "pixels" not in d:
                yield Prediction(name, model=self.model_id, error=d["error"])
            else:
                yield self.make_prediction(name, d, float(next(it)))

    def describe(self) -> str:
        """One line for table titles and pages: model, input, operating point."""
        return (f"{self.model_id} ({self.spec.image_size} px {self.spec.label()}; threshold {self.threshold:.3f}, "
                f"{describe_range(self.threshold, self.uncertain_range)}, T={self.temperature:.3f})")

    def use_policy(self, policy: str) -> None:
        """Feed the model by another input policy (resize | center_crop | crop | tiles:N) at its own input size,
        to measure how a fixed-input model should see full-size images."""
        from ..data.preprocess import PreprocessSpec

        self.spec = PreprocessSpec.parse(self.spec.image_size, policy)
        self.model_id = f"{self.model_id}[{self.spec.label()}]"

    def route(self, height: int, width: int) -> tuple["Detector", str | None]:
        """Which model scores an image of this size, and why (a single model scores everything)."""
        return self, None

    def score_decoded(self, decoded: list[dict]) -> np.ndarray:
        """Calibrated P(AI) of the inputs that decoded, in order (each by the model `decode` chose). With an
        attribution head, each decoded dict also gets its feature vector, read from the same forward pass."""
        pixels = stack_decoded(decoded)
        if not len(pixels):
            return np.zeros(0)
        if self.attribution is None:
            return self.probabilities_from_arrays(pixels)
        logits, feats = self.logits_and_features(pixels)
        for d, f in zip((d for d in decoded if "pixels" in d), feats if feats is not None else []):
            d["features"] = f
        return self.calibrated(logits)

    def logits_and_features(self, pixels: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits and the attribution features (`models.features`) from one pass on
        the chosen backend; features None where the backend cannot give them (an ONNX file without them)."""
        if self._onnx is not None:
            return self._onnx.with_features(pixels, batch_size)
        from .scoring import score_with_features

        return score_with_features(self.model, pixels, batch_size, self.device, amp=True,
                                   cpu_bf16=self.precision == "bf16")

    def train_digests(self) -> set:
        """Content digests of the training (+ validation) files, so evaluation never scores them."""
        from ..models.checkpoint import load_train_digests

        return load_train_digests(self.directory) if self.directory is not None else set()

    def make_prediction(self, name: str, decoded: dict, p: float) -> Prediction:
        """Score + metadata + domain check -> the verdict (the one place verdicts are made)."""
        det = decoded.get("detector", self)
        if det is not self:  # routed: the chosen model makes its own verdict
            pred = det.make_prediction(name, decoded, p)
            pred.route = decoded.get("route")
            return pred
        pixel = self.verdict(p)
        warnings = self.domain_warnings(*decoded["size"])
        # a model whose band was fitted on unseen sources lets the band decide; size warnings only inform
        decide = bool(warnings) and self.config.get("domain_rule", "abstain") == "abstain"
        verdict, reason = combine_verdict(pixel, decoded["evidence"], out_of_domain=decide)
        generator = self.attribute(verdict, decoded, p) if verdict in ("ai", "uncertain") else None
        return Prediction(name, round(p, 6), verdict, self.model_id, None, pixel, reason,
                          [e.to_dict() for e in decoded["evidence"]], warnings, None, self.threshold, self.uncertain_band,
                          self.uncertain_range, generator, score_reading(self.reading, p, self.temperature))

    def attribute(self, verdict: str, decoded: dict, p: float | None = None) -> dict | None:
        """The generator family from pixels (the attribution head on this image's features) and from metadata
        naming a generator; strong metadata wins, saying so. None when neither says anything."""
        from .attribution import from_metadata

        meta = from_metadata(decoded["evidence"])
        pixels = None
        if self.attribution is not None and "features" in decoded:
            pixels = self.attribution.predict(decoded["features"][None], p_ai=[p if p is not None else np.nan])[0]
        if meta and meta["strength"] == "strong":
            return {**meta, "name": meta["name"], "source": "metadata", "pixels": pixels,
                    "note": f"metadata names {meta['name']} ({meta['evidence']}); it wins over the pixels"}
        if pixels is None and meta is None:
            return None
        out = dict(pixels) if pixels else {"name": "unknown", "probability": None, "top3": [], "source": "none"}
        if meta:
            out["metadata"] = meta
        return out

    # --- explanations ---------------------------------------------------------------------------

    def reference_spectra(self) -> dict | None:
        """Mean real/AI residual spectra of the training data, if the model directory has them."""
        path = self.directory / SPECTRA if self.directory is not None else None
        if path is None or not path.exists():
            return None
        from safetensors.numpy import load_file

        return load_file(str(path))

    def explain(self, source: ImageSource, methods: Sequence[str] = ("gradcam",), name: str | None = None,
                n_samples: int | None = None, n_segments: int | None = None, progress: bool = False) -> list:
        """Explain one image's verdict with each method in `methods` (see `explain.METHODS`).

        Raises ImageError (naming the input and the problem) when the input cannot be scored.
        """
        from .explain import explain_image

        return explain_image(self, source, methods, name, n_samples, n_segments, progress)

    def decode(self, item: tuple) -> dict:
        """(source, name) -> pixels, decoded size and metadata evidence, or {"error": problem} (never raises).

        Public so that front ends which schedule decoding and scoring themselves (the server) still run
        exactly this code; `predict_iter` is the plain in-process loop over it.
        """
        src, name = item
        try:
            if isinstance(src, (str, Path)):
                try:
                    src = Path(src).read_bytes()
                except OSError as e:
                    raise ImageError(name, "file not found" if isinstance(e, FileNotFoundError)
                                     else f"cannot read file ({e.strerror or e})") from None
            arr = decode_image(src, name, max_pixels=self.max_pixels)
            size = arr.shape[:2]
            det, route = self.route(*size)
            evidence = (inspect(src, name, pixels=arr, resave=self.resave_check)
                        if self.metadata and isinstance(src, (bytes, bytearray, memoryview)) else [])
            return {"pixels": fit(arr, det.spec), "size": size, "evidence": evidence, "data": src,
                    "detector": det, "route": route}
        except ImageError as e:
            return {"error": e.problem}
        except Exception as e:  # anything else is still a per-file failure, not a crash
            return {"error": f"{type(e).__name__}: {e}"}


class AutoDetector(Detector):
    """The bundled models behind one Detector: each image goes to the model trained on images of its size
    (the CIFAKE-sized model for thumbnails, the photo model for full-size images), and every Prediction
    names the model that scored it and why (`Prediction.model`, `Prediction.route`).

    The rule: the model whose training images' median short side is nearest to the image's short side
    on a log scale (32 px vs 512 px -> the boundary is at 128 px).
    """

    def __init__(self, members: dict[str, "Detector | Callable[[], Detector]"], configs: dict[str, dict] | None = None,
                 device: str = "cpu", backend: str = "auto", precision: str = "auto"):
        """`members`: detectors, or functions that load them on first use (with their `configs`, which route):
        a folder of thumbnails never pays for loading the photo model."""
        self._loaded = {k: m for k, m in members.items() if isinstance(m, Detector)}
        self._loading = threading.Lock()
        self._loaders = {k: (m if k not in self._loaded else (lambda m=m: m)) for k, m in members.items()}
        configs = {k: self._loaded[k].config if k in self._loaded else configs[k] for k in members}
        self.directory = None
        self.device, self.backend, self.precision = pick_device(str(device)), backend, precision
        self.model_id = AUTO
        self._configs = configs
        self._centres = {k: _median_short_side(c) for k, c in configs.items()}
        self._max_pixels, self._metadata, self._resave_check = DEFAULT_MAX_PIXELS, True, False
        self.threshold = self.uncertain_band = self.temperature = None  # per member: see each Prediction
        self.uncertain_range = None

    def member(self, name: str) -> Detector:
        with self._loading:  # the server's threads may ask for a member at once: load it once
            if name not in self._loaded:
                det = self._loaders[name]()
                det.max_pixels, det.metadata, det.resave_check = self._max_pixels, self._metadata, self._resave_check
                self._loaded[name] = det
        return self._loaded[name]

    @property
    def members(self) -> dict[str, Detector]:
        """Every member, loaded."""
        return {k: self.member(k) for k in self._loaders}

    # settings front ends change apply to every member
    max_pixels = property(lambda self: self._max_pixels, lambda self, v: self._set("max_pixels", v))
    metadata = property(lambda self: self._metadata, lambda self, v: self._set("metadata", v))
    resave_check = property(lambda self: self._resave_check, lambda self, v: self._set("resave_check", v))

    def _set(self, attr: str, value) -> None:
        setattr(self, "_" + attr, value)
        for m in self._loaded.values():
            setattr(m, attr, value)

    def route(self, height: int, width: int) -> tuple[Detector, str]:
        name = self.route_name(height, width)
        return self.member(name), (f"auto: {width}x{height} is nearest the {name} model's training images "
                                   f"(median short side {self._centres[name]} px)")

    def route_name(self, height: int, width: int) -> str:
        short = max(1, min(height, width))
        return min(self._centres, key=lambda k: abs(np.log(short / self._centres[k])))

    def score_decoded(self, decoded: list[dict]) -> np.ndarray:
        good = [d for d in decoded if "pixels" in d]
        probs = np.zeros(len(good))
        for det in {id(d["detector"]): d["detector"] for d in good}.values():
            idx = [i for i, d in enumerate(good) if d["detector"] is det]
            probs[idx] = det.score_decoded([good[i] for i in idx])
        return probs

    def train_digests(self) -> set:
        return set().union(*(m.train_digests() for m in self.members.values()))

    def describe(self) -> str:
        """The members used so far (all of them before any image was scored)."""
        used = self._loaded or self.members
        return "auto: each image to the model made for its size — " + "; ".join(m.describe() for m in used.values())

    def use_policy(self, policy: str) -> None:
        self._single("--policy")

    def _single(self, what: str):
        raise ValueError(f"the auto detector routes each image to one of {', '.join(self._loaders)}; "
                         f"{what} needs one model: name it (--model {' or --model '.join(self._loaders)})")

    def logits(self, images, batch_size: int = 512):
        self._single("scoring preprocessed arrays")

    def probabilities_from_arrays(self, images, batch_size: int = 512):
        self._single("scoring preprocessed arrays")

    def reference_spectra(self):
        return None

    @property
    def spec(self):
        self._single("a single preprocessing spec")

    @property
    def config(self):
        return {"arch": {"name": AUTO}, "members": self._configs}


def _median_short_side(config: dict) -> int:
    stats = config.get("data", {}).get("image_sizes") or {}
    hw = stats.get("median_hw") or [spec_of(config).image_size] * 2
    return int(min(hw))
