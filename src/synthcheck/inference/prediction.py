"""`Prediction`, one verdict as every front end reports it, and the small rules around it: a model's uncertain
range and how it is described, and the stacking of decoded inputs for one model call."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.preprocess import ImageSource


@dataclass
class Prediction:
    """One verdict. `prob_ai` is the calibrated P(AI-generated) from pixels; `verdict` joins it with the
    metadata evidence by `metadata.combine_verdict`; `error` is set instead when the input failed."""

    source: str
    prob_ai: float | None = None
    verdict: str | None = None        # "ai" | "real" | "uncertain"
    model: str | None = None
    error: str | None = None
    pixel_verdict: str | None = None  # from the calibrated score and threshold alone
    reason: str | None = None
    evidence: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    route: str | None = None          # why this model scored it, when the Detector chose among several
    threshold: float | None = None    # the scoring model's operating point and uncertain band
    uncertain_band: float | None = None
    uncertain_range: tuple | None = None  # (low, high): "real" at P(AI) <= low, "ai" at >= high, else "uncertain"
    generator: dict | None = None     # for "ai"/"uncertain": which generator family made it, or "unknown" (attribution.py)
    reading: dict | None = None       # what this score meant on sources the model never saw (calibration.unseen_reading)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        # by hand: dataclasses.asdict deep-copies every field (~40 us per result, measured in `predict`)
        return {"source": self.source, "prob_ai": self.prob_ai, "verdict": self.verdict, "model": self.model,
                "error": self.error, "pixel_verdict": self.pixel_verdict, "reason": self.reason,
                "evidence": list(self.evidence), "warnings": list(self.warnings), "route": self.route,
                "threshold": self.threshold, "uncertain_band": self.uncertain_band,
                "uncertain_range": list(self.uncertain_range) if self.uncertain_range else None,
                "generator": self.generator, "reading": self.reading}


def stack_decoded(decoded: list[dict]) -> np.ndarray:
    """The pixels of the inputs that decoded, stacked for one model call (failures are skipped)."""
    good = [d["pixels"] for d in decoded if "pixels" in d]
    return np.stack(good) if good else np.zeros((0, 3, 1, 1), np.uint8)


def uncertain_range(config: dict) -> tuple[float, float]:
    """(low, high) of a model's "uncertain" verdicts: fitted on left-out sources (`abstain` in its config,
    from `crossval`) or, for models calibrated on validation data, threshold ± uncertain_band."""
    a = config.get("abstain")
    if a:
        return float(a["low"]), float(a["high"])
    t, b = float(config.get("threshold", 0.5)), float(config.get("uncertain_band", 0.0))
    return t - b, t + b


def times_in_ten(share: float) -> str:
    """0.7 -> "7 times in 10"; the ends say "more than 9" / "fewer than 1" rather than a rounded certainty."""
    if share >= 0.95:
        return "more than 9 times in 10"
    if share < 0.05:
        return "fewer than 1 time in 10"
    k = int(10 * share + 0.5)  # half up (round() would send 0.15 and 0.25 both to 2)
    return f"{k} time{'s' if k != 1 else ''} in 10"


def reading_words(reading: dict) -> str:
    """A `Prediction.reading` as a sentence a person reads correctly: a share among many images, not a promise
    about this one."""
    what = "left-out images" if len(reading.get("copies", ["as is"])) < 2 else "left-out images and re-saved copies"
    return (f"Among images from sources it never saw, mixed half AI and half real, those scored in this range "
            f"were AI-generated {times_in_ten(reading['ai_share'])} ({reading['n']} of {reading['images']:,} "
            f"{what} scored in this range).")


def score_reading(table: dict | None, p: float, temperature: float) -> dict | None:
    """A model's `unseen_reading` row for P(AI) = p (the table is keyed on the centred logit, T x logit(p)), with
    the range in P(AI) and the sentence every front end shows; None for a model without the table."""
    from .calibration import probabilities, read_score

    if not table:
        return None
    q = min(max(p, 1e-12), 1 - 1e-12)
    r = read_score(table, temperature * float(np.log(q / (1 - q))))
    lo, hi = r.pop("range_logit")
    r["range"] = [0.0 if lo is None else round(float(probabilities(np.array([lo]), temperature)[0]), 4),
                  1.0 if hi is None else round(float(probabilities(np.array([hi]), temperature)[0]), 4)]
    r["text"] = reading_words(r)
    return r


def describe_range(threshold: float, rng: tuple[float, float]) -> str:
    low, high = rng
    if abs((threshold - low) - (high - threshold)) < 1e-9:
        return f"uncertain within ±{high - threshold:.2f}"
    return f"uncertain from {low:.3f} to {high:.3f}"


def _source_name(src: ImageSource, i: int) -> str:
    if isinstance(src, (str, Path)):
        return str(src)
    return f"<image {i}>"
