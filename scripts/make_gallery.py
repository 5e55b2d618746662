"""README gallery: CIFAKE test images the default model gets right and wrong, with Grad-CAM and LIME.

    python scripts/make_gallery.py [--data ../shared/data/cifake/cifake_test_jpg.tar.gz] [--out docs/gallery.png]

Picks, with a fixed seed, 2 correct real, 2 correct AI, and the most confident
mistake of each kind, so the gallery shows failures as plainly as successes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from synthcheck import Detector
from synthcheck.analysis.evaluate import drop_train_identical, evaluation_part
from synthcheck.data.folders import load_imageset


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/cifake/cifake_test_jpg.tar.gz")
    ap.add_argument("--out", default="docs/gallery.png")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    det = Detector.load()
    s = load_imageset(a.data, det.spec, progress=False)
    s, _ = drop_train_identical(det, evaluation_part(s))
    p = det.probabilities_from_arrays(s.images)
    pred = (p >= det.threshold).astype(int)
    rng = np.random.default_rng(a.seed)
    picks = []
    for label, want_right, n in ((0, True, 2), (1, True, 2), (0, False, 1), (1, False, 1)):
        idx = np.flatnonzero((s.labels == label) & ((pred == label) == want_right))
        if want_right:
            picks += [(i, "correct") for i in rng.choice(idx, n, replace=False)]
        else:  # the most confident mistake
            worst = idx[np.argmax(np.abs(p[idx] - det.threshold))]
            picks.append((worst, "WRONG"))

    fig, axes = plt.subplots(len(picks), 3, figsize=(7.5, 2.6 * len(picks)))
    for row, (i, kind) in zip(axes, picks):
        img = s.images[i].transpose(1, 2, 0)
        name = Path(s.names[i]).name
        cam, lime = det.explain(img, ["gradcam", "lime"], name=name)
        truth = "AI" if s.labels[i] else "real"
        big = np.kron(img, np.ones((8, 8, 1), dtype=np.uint8))
        row[0].imshow(big)
        row[0].set_title(f"{name}\ntruth {truth}; P(AI) {cam.prob_ai:.3f} → {cam.verdict} ({kind})", fontsize=8)
        for ax, e, cmap, signed in ((row[1], cam, "jet", False), (row[2], lime, "coolwarm", True)):
            a_big = np.kron(e.attribution, np.ones((8, 8)))
            lim = float(np.abs(e.attribution).max()) or 1.0
            ax.imshow(big)
            ax.imshow(a_big, cmap=cmap, alpha=0.5, vmin=-lim if signed else 0, vmax=lim)
            towards = "AI" if e.details.get("towards_ai", True) else "real"
            ax.set_title(f"Grad-CAM (evidence for {towards})" if e.method == "gradcam" else "LIME (red → AI, blue → real)",
                         fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=80)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
