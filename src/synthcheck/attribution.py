"""Which generator made it: a light open-set classifier over the photo model's own image features.

Why a separate head on cached features, not a second head trained with the backbone: the real-vs-AI
verdict and its calibration stay exactly as measured (attribution changes no weight of it), the features
come out of the forward pass that scores the image anyway (no extra pass, so no change in speed), and the
head trains in seconds, so it can be refit, and left-one-generator-out runs are cheap.

The head: standardised features -> multinomial logistic regression over the generator families with
enough images. Open set: a family it was not trained on must come out "unknown", not as the nearest name;
the rejection score (max softmax probability, energy, or Mahalanobis distance to the nearest family mean)
and its threshold are chosen on leave-one-family-out runs (`fit_open_set`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

UNKNOWN = "unknown"
HEAD_FILE = "attribution.safetensors"
HEAD_CONFIG = "attribution.json"
SCORES = ("msp", "energy", "mahalanobis")


@dataclass
class AttributionHead:
    """Linear softmax head + rejection rule; saved as safetensors + JSON (never pickle)."""

    families: list[str]
    mean: np.ndarray       # [D] feature standardisation
    scale: np.ndarray      # [D]
    weight: np.ndarray     # [K, D]
    bias: np.ndarray       # [K]
    centres: np.ndarray    # [K, P] family means in the whitened PCA space (Mahalanobis)
    components: np.ndarray  # [D, P] PCA projection, whitened
    rule: str = "msp"      # which rejection score
    threshold: float = 0.0  # accept (name the family) when the score is at least this
    info: dict = field(default_factory=dict)

    def logits(self, feats: np.ndarray) -> np.ndarray:
        z = (np.asarray(feats, np.float64) - self.mean) / self.scale
        return z @ self.weight.T + self.bias

    def probabilities(self, feats: np.ndarray) -> np.ndarray:
        return _softmax(self.logits(feats))

    def score(self, feats: np.ndarray, rule: str | None = None) -> np.ndarray:
        """Higher = more like a known family."""
        return open_set_scores(self, feats, rule or self.rule)

    def predict(self, feats: np.ndarray) -> list[dict]:
        """One attribution per row: the family or "unknown", its probability, the top-3 candidates."""
        p = self.probabilities(feats)
        s = self.score(feats)
        out = []
        for row, sc in zip(p, s):
            order = np.argsort(-row)[:3]
            top = [{"family": self.families[i], "probability": round(float(row[i]), 4)} for i in order]
            known = bool(sc >= self.threshold)
            out.append({"name": top[0]["family"] if known else UNKNOWN, "probability": top[0]["probability"],
                        "top3": top, "open_set_score": round(float(sc), 4), "source": "pixels"})
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


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def open_set_scores(head: AttributionHead, feats: np.ndarray, rule: str) -> np.ndarray:
    """Known-ness of each row: max softmax probability (Hendrycks & Gimpel, 2017), energy (logsumexp of the
    logits; Liu et al., 2020), or minus the Mahalanobis distance to the nearest family mean (Lee et al., 2018)
    with a shared covariance, computed as Euclidean distance in the whitened PCA space."""
    if rule == "msp":
        return head.probabilities(feats).max(1)
    if rule == "energy":
        z = head.logits(feats)
        m = z.max(1)
        return m + np.log(np.exp(z - m[:, None]).sum(1))
    if rule == "mahalanobis":
        w = ((np.asarray(feats, np.float64) - head.mean) / head.scale) @ head.components
        d = ((w[:, None, :] - head.centres[None]) ** 2).sum(-1)
        return -np.sqrt(d.min(1))
    raise ValueError(f"unknown open-set score {rule!r}; choose one of {', '.join(SCORES)}")


def fit_head(feats: np.ndarray, families: np.ndarray, c: float = 0.1, pca: int = 64, seed: int = 0) -> AttributionHead:
    """Multinomial logistic regression on standardised features (scikit-learn), plus the whitened PCA space
    and family centres the Mahalanobis score needs."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(feats, np.float64)
    names = sorted(set(families))
    y = np.array([names.index(f) for f in families])
    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / scale
    lr = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(z, y)
    weight, bias = lr.coef_, lr.intercept_
    if len(names) == 2:  # scikit-learn gives one row for two classes: make it a two-logit softmax
        weight, bias = np.vstack([-weight / 2, weight / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    p = PCA(n_components=min(pca, z.shape[1], len(z) - 1), whiten=True, random_state=seed).fit(z)
    comps = p.components_.T / np.sqrt(p.explained_variance_)
    w = (z - p.mean_) @ comps
    centres = np.stack([w[y == k].mean(0) for k in range(len(names))])
    # fold PCA's centring into the centres (scores use z @ comps)
    centres = centres + p.mean_ @ comps
    return AttributionHead(names, mean, scale, weight, bias, centres, comps)


def leave_one_family_out(feats: np.ndarray, families: np.ndarray, known_test: np.ndarray, extra_unknown=None,
                         **kw) -> dict:
    """Each known family in turn left out of the head: its images should be rejected, while held-out images of
    the families the head kept (`known_test`, never trained on) should still be named. -> per rule, the
    scores of both kinds, pooled over the runs (for choosing the rule and its threshold)."""
    fams = np.asarray(families, dtype=object)
    train = ~known_test
    out = {r: {"known": [], "unknown": [], "unknown_family": []} for r in SCORES}
    for f in sorted(set(fams[train])):
        tr = train & (fams != f)
        head = fit_head(feats[tr], fams[tr], **kw)
        kt = known_test & (fams != f)
        for r in SCORES:
            out[r]["known"].append(open_set_scores(head, feats[kt], r))
            unk = open_set_scores(head, feats[fams == f], r)
            out[r]["unknown"].append(unk)
            out[r]["unknown_family"] += [f] * len(unk)
    for r in SCORES:
        out[r]["known"] = np.concatenate(out[r]["known"])
        out[r]["unknown"] = np.concatenate(out[r]["unknown"])
        out[r]["unknown_family"] = np.array(out[r]["unknown_family"])
    return out


def fit_open_set(lofo: dict, keep_known: float = 0.80) -> dict:
    """Choose the rejection score with the best known-vs-unknown ROC-AUC on the left-out runs, and the threshold
    that keeps `keep_known` of held-out known images named. -> rule, threshold, and per rule the figures."""
    from sklearn.metrics import roc_auc_score

    figures = {}
    for r, d in lofo.items():
        known, unknown = d["known"], d["unknown"]
        thr = float(np.quantile(known, 1 - keep_known))
        per_family = {f: float((unknown[d["unknown_family"] == f] < thr).mean()) for f in np.unique(d["unknown_family"])}
        figures[r] = {"roc_auc": float(roc_auc_score(np.r_[np.ones(len(known)), np.zeros(len(unknown))],
                                                     np.r_[known, unknown])),
                      "threshold": thr, "known_named": float((known >= thr).mean()),
                      "unknown_rejected": float((unknown < thr).mean()), "unknown_rejected_by_family": per_family}
    best = max(figures, key=lambda r: figures[r]["roc_auc"])
    return {"rule": best, "threshold": figures[best]["threshold"], "figures": figures}


def trade_off_curve(lofo: dict, rule: str, points: int = 50) -> dict:
    """Share of held-out known images named vs share of left-out-family images rejected, over thresholds."""
    d = lofo[rule]
    qs = np.quantile(np.r_[d["known"], d["unknown"]], np.linspace(0, 1, points))
    return {"threshold": qs.tolist(), "known_named": [float((d["known"] >= q).mean()) for q in qs],
            "unknown_rejected": [float((d["unknown"] < q).mean()) for q in qs]}


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
