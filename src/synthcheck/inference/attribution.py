"""Which generator made it: a light open-set classifier over the photo model's own image features.

Why a separate head on cached features, not a second head trained with the backbone: the real-vs-AI
verdict and its calibration stay exactly as measured (attribution changes no weight of it), the features
come out of the forward pass that scores the image anyway (no extra pass, so no change in speed), and the
head trains in seconds, so it can be refit, and left-one-generator-out runs are cheap.

The head: standardised features -> multinomial logistic regression over the generator families with
enough images, plus one "outlier" class learned from images of generators it must not name (thin families,
unstated generators: outlier exposure, Hendrycks et al., 2019). Open set: a family it was not trained on must
come out "unknown", not as the nearest name; the rejection score (1 - P(outlier), max softmax probability,
energy, or Mahalanobis distance to the nearest family mean), its regularisation and its threshold are chosen
on leave-one-family-out runs (`training.attribution.fit_attribution`).

This module is the head as a Detector uses it (load, predict, the generator named by metadata); fitting it
lives in `training.attribution`, and its figures on an evaluated set in `analysis.evaluate`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

UNKNOWN = "unknown"
HEAD_FILE = "attribution.safetensors"
HEAD_CONFIG = "attribution.json"
SCORES = ("outlier", "msp", "energy", "mahalanobis")


@dataclass
class AttributionHead:
    """Linear softmax head + rejection rule; saved as safetensors + JSON (never pickle)."""

    families: list[str]
    mean: np.ndarray       # [D] feature standardisation
    scale: np.ndarray      # [D]
    weight: np.ndarray     # [K, D], or [K+1, D] with the outlier class last
    bias: np.ndarray       # [K] or [K+1]
    centres: np.ndarray    # [K, P] family means in the whitened PCA space (Mahalanobis)
    components: np.ndarray  # [D, P] PCA projection, whitened
    rule: str = "msp"      # which rejection score
    threshold: float = 0.0  # accept (name the family) when the score is at least this
    info: dict = field(default_factory=dict)

    @property
    def outlier_class(self) -> bool:
        return len(self.bias) == len(self.families) + 1

    def logits(self, feats: np.ndarray) -> np.ndarray:
        """[N, K] (+1 column for the outlier class when the head has one)."""
        z = (np.asarray(feats, np.float64) - self.mean) / self.scale
        return z @ self.weight.T + self.bias

    def probabilities(self, feats: np.ndarray) -> np.ndarray:
        """[N, K]: each named family's probability; with the outlier class, rows sum to 1 - P(outlier)."""
        return _softmax(self.logits(feats))[:, :len(self.families)]

    def score(self, feats: np.ndarray, rule: str | None = None) -> np.ndarray:
        """Higher = more like a known family."""
        return open_set_scores(self, feats, rule or self.rule)

    @property
    def naming(self) -> dict | None:
        """The naming rule fitted on collections and families the head never saw (`training.attribution_out`):
        which families may be named from pixels, and the floors on their probability and on P(AI). None for a
        head fitted before there was one (it names whatever clears its open-set threshold)."""
        return self.info.get("naming_rule")

    def predict(self, feats: np.ndarray, p_ai=None) -> list[dict]:
        """One attribution per row: the family or "unknown", its probability, the top-3 candidates. With a
        naming rule, a family is named only where the rule allows it (`p_ai`: each row's P(AI); without it the
        rule's P(AI) floor cannot be checked, so nothing it guards is named), and an answer the rule refuses
        carries no candidates and no probability, only a note saying why."""
        p = self.probabilities(feats)
        s = self.score(feats)
        rule = self.naming
        p_ai = np.full(len(p), np.nan) if p_ai is None else np.atleast_1d(np.asarray(p_ai, np.float64))
        out = []
        for row, sc, pa in zip(p, s, p_ai):
            order = np.argsort(-row)[:3]
            top = [{"family": self.families[i], "probability": round(float(row[i]), 4)} for i in order]
            known = bool(sc >= self.threshold)
            r = {"name": UNKNOWN, "probability": top[0]["probability"], "top3": top,
                 "open_set_score": round(float(sc), 4), "source": "pixels"}
            if rule is not None:
                known = known and allowed_name(rule, top[0]["family"], float(row[order[0]]), float(pa))
                r["note"] = rule_note(rule, known)
                if not known:  # the closest families were right too rarely on unseen collections to show as leads
                    r["top3"], r["probability"] = [], None
            r["name"] = top[0]["family"] if known else UNKNOWN
            out.append(r)
        return out

    def save(self, directory: str | Path) -> None:
        from safetensors.numpy import save_file

        directory = Path(directory)
        save_file({k: np.ascontiguousarray(getattr(self, k), dtype=np.float32)
                   for k in ("mean", "scale", "weight", "bias", "centres", "components")}, str(directory / HEAD_FILE))
        (directory / HEAD_CONFIG).write_text(json.dumps({"families": self.families, "rule": self.rule,
                                                         "threshold": self.threshold, "info": self.info}, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> "AttributionHead | None":
        from safetensors.numpy import load_file

        directory = Path(directory)
        if not (directory / HEAD_FILE).exists():
            return None
        t = load_file(str(directory / HEAD_FILE))
        c = json.loads((directory / HEAD_CONFIG).read_text())
        return cls(c["families"], *(t[k].astype(np.float64) for k in ("mean", "scale", "weight", "bias", "centres",
                                                                         "components")), c["rule"], c["threshold"], c["info"])


def allowed_name(rule: dict, family: str, probability: float, p_ai: float) -> bool:
    """May this top family be named? Only a family the rule lists, at a probability and a P(AI) no lower than
    its floors (a missing P(AI), NaN, clears only a floor of 0)."""
    if family not in rule.get("families", []):
        return False
    if probability < rule.get("min_probability", 0.0):
        return False
    floor = rule.get("min_p_ai", 0.0)
    return floor <= 0 or (p_ai == p_ai and p_ai >= floor)


# the note of a head whose naming rule names no family at all: the same on every image, so a table says it once
NO_PIXEL_NAMES = ("pixels: no name; no family's pixel name was right often enough on collections the model never saw "
                  "to be given")


def rule_note(rule: dict, named: bool) -> str:
    """What a pixel answer under the naming rule rests on, in words (the top 3 stay in the data, not the line:
    a closest family is a resemblance, and users read any name shown as a lead)."""
    n = (rule.get("left_out") or {}).get("nested") or {}
    record = (f"; on collections it never saw, names given this way were right {n['right']} of {n['named']} times"
              if n.get("named") else "")
    if named:
        return f"pixels{record}"
    if not rule.get("families"):
        return NO_PIXEL_NAMES
    return "pixels: no name; not like enough to a family validated on collections it never saw"


def generator_note(g: dict) -> str:
    """One line for a Prediction's `generator`, as every front end shows it."""
    if g.get("source") == "metadata":
        return f"generator: {g['name']} (metadata, wins over pixels: {g.get('evidence', '')})"
    top = ", ".join(f"{t['family']} {t['probability']:.2f}" for t in g.get("top3", []))
    if g.get("note"):
        line = f"generator: {g['name']} ({g['note']})"
    else:
        line = f"generator: {g['name']}" + (f" (pixels; top 3: {top})" if top else "")
    if g.get("metadata"):
        line += f"; metadata names {g['metadata']['name']} ({g['metadata']['strength']})"
    return line


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def open_set_scores(head: AttributionHead, feats: np.ndarray, rule: str) -> np.ndarray:
    """Known-ness of each row: 1 - P(outlier class) (outlier exposure), max softmax probability over the named
    families (Hendrycks & Gimpel, 2017), energy (logsumexp of their logits; Liu et al., 2020), or minus the Mahalanobis distance to the nearest family mean (Lee et al., 2018)
    with a shared covariance, computed as Euclidean distance in the whitened PCA space."""
    if rule == "outlier":
        if not head.outlier_class:
            raise ValueError("the 'outlier' score needs a head trained with an outlier class")
        return head.probabilities(feats).sum(1)
    if rule == "msp":
        return head.probabilities(feats).max(1)
    if rule == "energy":
        z = head.logits(feats)[:, :len(head.families)]
        m = z.max(1)
        return m + np.log(np.exp(z - m[:, None]).sum(1))
    if rule == "mahalanobis":
        w = ((np.asarray(feats, np.float64) - head.mean) / head.scale) @ head.components
        d = ((w[:, None, :] - head.centres[None]) ** 2).sum(-1)
        return -np.sqrt(d.min(1))
    raise ValueError(f"unknown open-set score {rule!r}; choose one of {', '.join(SCORES)}")


# generator names that metadata can carry (C2PA claim generator, PNG text, EXIF Software) -> family
_META_FAMILIES = (  # most specific first: a ComfyUI graph naming a FLUX checkpoint is FLUX, not Stable Diffusion
    (r"flux|black forest", "flux"),
    (r"stable[ -]?diffusion|automatic1111|a1111|comfyui|invokeai|fooocus|sdxl|dreamstudio|novelai", "stable-diffusion"),
    (r"dall[·\-. ]?e|openai|chatgpt|gpt-?4o|gpt-image|sora", "gpt-4o"),
    (r"nano[ -]?banana|gemini|imagen|google", "nano-banana"),
    (r"midjourney|nijijourney", "midjourney"),
    (r"firefly|adobe", "firefly"),
)


def from_metadata(evidence) -> dict | None:
    """A generator named by AI metadata evidence (e.g. a C2PA claim generator "ChatGPT", Stable Diffusion
    WebUI parameters) -> {"name", "strength", "evidence"}; None when no AI evidence names one."""
    import re

    for e in evidence:
        ev = e if isinstance(e, dict) else e.to_dict()
        if ev["indicates"] != "ai":
            continue
        text = f"{ev['value']} {ev['note']}"
        for pattern, family in _META_FAMILIES:
            if re.search(pattern, text, re.IGNORECASE):
                return {"name": family, "strength": ev["strength"],
                        "evidence": f"{ev['source']} {ev['field']}: {str(ev['value'])[:80]}"}
    return None


