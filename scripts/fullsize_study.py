"""How the bundled models do on full-size images, and why: the measurements behind README's "Full-size images".

    TORCH_HOME=... python scripts/fullsize_study.py [--out reports/fullsize]

1. Input policy: each model scored on the photo model's held-out DiffusionDB part and the GAN crops under
   resize, center_crop, crop (native centre), tiles:2 and tiles:3 (native grids, mean logit).
2. Content shortcut: the photo model's scores on the held-out part by hand-labelled content (photoreal / art /
   unsure generated images; COCO and ImageNet photos), and under two probes: patch shuffling (content destroyed,
   local pixel statistics kept) and a 0.5x down-up resize (generator artifacts destroyed, content kept).
0. Cross-generator table: every bundled model and the auto detector on CIFAKE test, the held-out DiffusionDB
   part and the GAN crops (accuracy, ROC-AUC, AP per set, and the mean).
3. Confidently wrong: the share of final verdicts (`Detector.predict`, with the domain check and metadata)
   that are "ai"/"real" and wrong, per set, for each bundled model and for the auto detector.

Everything is scored through the library (`Detector`, `evaluate_sets`), so the figures are what users get.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "ood-dev"
DIFFUSIONDB = SHARED / "diffusiondb-vs-coco-imagenet.tar"
GAN = SHARED / "cnndetection-gan-crops.tar"
LABELS = ROOT / "reports" / "photo_model" / "diffusion_content_labels.csv"
POLICIES = ("resize", "center_crop", "crop", "tiles:2", "tiles:3")


def extract(tar: Path, dest: Path, keep=None) -> Path:
    """Unpack the labelled images of a tar (optionally only those whose bytes `keep` accepts) to a folder."""
    from synthcheck.data.folders import iter_source

    for item in iter_source(tar):
        if keep is not None and not keep(item.data):
            continue
        path = dest / item.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(item.data)
    return dest


def heldout_folder(photo, work: Path) -> Path:
    """The photo model's held-out part of the DiffusionDB set as a folder (every model is scored on exactly it)."""
    from synthcheck.data.store import digest

    seen = photo.train_digests()
    dest = work / "diffusiondb-heldout"
    if dest.exists():
        shutil.rmtree(dest)
    return extract(DIFFUSIONDB, dest, keep=lambda b: digest(b)[:8] not in seen)


CIFAKE_TEST = ROOT.parent / "shared" / "data" / "cifake" / "cifake_test_jpg.tar.gz"


def cifake_sample(work: Path, n: int = 1000) -> Path:
    """A seeded n-image part (half real, half AI) of the CIFAKE test split, for models whose input is so large
    that the whole split would not fit in memory decoded (the photo model: 20,000 x 9 tiles of 224 px)."""
    from synthcheck.data.folders import iter_source

    dest = work / f"cifake-test-{n}"
    if dest.exists():
        return dest
    items = list(iter_source(CIFAKE_TEST))
    rng = np.random.default_rng(0)
    for label in (0, 1):
        idx = [i for i, it in enumerate(items) if it.label == label]
        for i in rng.choice(idx, n // 2, replace=False):
            path = dest / items[i].name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(items[i].data)
    return dest


def cross_table(models: list[str], sets: list[Path], small_sample: Path) -> list[dict]:
    from synthcheck.analysis.evaluate import evaluate_sets
    from synthcheck.inference.detector import Detector

    rows = []
    for name in models:
        det = Detector.load(name)
        big = not hasattr(det, "members") and det.spec.image_size * det.spec.tiles > 64
        res = evaluate_sets(det, [small_sample if big and s == CIFAKE_TEST else s for s in sets],
                            progress=False, plots=False)
        row = {"model": name, "sets": {k: {f: m.get(f) for f in ("n", "accuracy", "roc_auc", "average_precision",
                                                                  "routed", "excluded_train_identical")}
                                       for k, m in res["sets"].items()},
               "mean": {f: res["summary"]["mean"][f] for f in ("accuracy", "roc_auc", "average_precision")}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def variants_table(dirs: list[str], sets: dict[str, Path]) -> list[dict]:
    """Every photo-model candidate trained: validation loss (the selection rule), held-out and GAN-crop figures."""
    from synthcheck.analysis.evaluate import evaluate_sets
    from synthcheck.inference.detector import Detector

    rows = []
    for d in dirs:
        det = Detector.load(d)
        res = evaluate_sets(det, [sets["gan-crops"]], progress=False, plots=False)
        gan = next(iter(res["sets"].values()))
        c = det.config
        rows.append({"model": d, "notes": c.get("notes"), "val_loss": c.get("val_loss"), "epoch": c.get("epoch"),
                     "train_time_s": c.get("train_time_s"), "policy": det.spec.label(), "size": det.spec.image_size,
                     "heldout": {k: c["test_metrics"][k] for k in ("n", "accuracy", "roc_auc")},
                     "gan": {"n": gan["n"], "accuracy": gan["accuracy"], "roc_auc": gan["roc_auc"]}})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def policy_table(models: list[str], sets: list[Path]) -> list[dict]:
    from synthcheck.analysis.evaluate import evaluate_sets
    from synthcheck.inference.detector import Detector

    rows = []
    for name in models:
        for policy in POLICIES:
            det = Detector.load(name)
            det.use_policy(policy)
            res = evaluate_sets(det, sets, progress=False, plots=False)
            row = {"model": name, "policy": policy, "own_policy": policy == Detector.load(name).spec.label()}
            for key, m in res["sets"].items():
                row[key] = {"n": m["n"], "accuracy": m["accuracy"], "roc_auc": m["roc_auc"],
                            "average_precision": m["average_precision"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _files(folder: Path) -> tuple[list[Path], np.ndarray]:
    from synthcheck.data.folders import LABEL_DIRS

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.parent.name.lower() in LABEL_DIRS)
    return files, np.array([LABEL_DIRS[p.parent.name.lower()] for p in files])


def _auroc(y, p):
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def shuffle_patches(img: np.ndarray, patch: int, rng) -> np.ndarray:
    """Shuffle the image's patch x patch blocks: no object or scene survives, every local pixel statistic does."""
    h, w = (img.shape[0] // patch) * patch, (img.shape[1] // patch) * patch
    blocks = img[:h, :w].reshape(h // patch, patch, w // patch, patch, 3).swapaxes(1, 2).reshape(-1, patch, patch, 3)
    blocks = blocks[rng.permutation(len(blocks))]
    return blocks.reshape(h // patch, w // patch, patch, patch, 3).swapaxes(1, 2).reshape(h, w, 3)


def content_study(photo_name: str, folder: Path) -> dict:
    """Photo model vs content: scores by content group, and AUROC when content or artifacts are destroyed."""
    from synthcheck.data.preprocess import decode_image
    from synthcheck.data.transforms import jpeg, rescale
    from synthcheck.inference.detector import Detector

    det = Detector.load(photo_name)
    files, y = _files(folder)
    content = {}
    if LABELS.exists():
        with open(LABELS) as f:
            content = {r["name"]: r["content"] for r in csv.DictReader(f)}
    group = []
    for p in files:
        if p.name.startswith("diffusion"):
            group.append(f"generated, {content.get(p.name, 'unlabelled')}")
        else:
            group.append(f"real, {p.name.split('_')[0]}")
    group = np.array(group)
    preds = det.predict([str(p) for p in files])
    prob = np.array([pr.prob_ai for pr in preds])
    called_ai = prob >= det.threshold
    groups = {}
    for g in sorted(set(group)):
        m = group == g
        groups[g] = {"n": int(m.sum()), "mean_p_ai": float(prob[m].mean()), "called_ai": float(called_ai[m].mean())}
    rng = np.random.default_rng(0)
    images = [decode_image(str(p)) for p in files]
    shuffled = [shuffle_patches(im, 32, rng) for im in images]
    probes = {"clean": prob}
    # the robustness report's own damage functions, at full size (then the same Detector path as any image)
    for key, imgs in (("patches shuffled (32 px)", shuffled), ("0.5x down-up resize", [rescale(im, 0.5) for im in images]),
                      ("re-saved as JPEG 95", [jpeg(im, 95) for im in images]),
                      ("re-saved as JPEG 80", [jpeg(im, 80) for im in images])):
        probes[key] = np.array([pr.prob_ai for pr in det.predict(imgs)])
    return {"model": det.model_id, "n": len(files), "by_content": groups,
            "probes": {k: {"roc_auc": _auroc(y, v), "accuracy": float(((v >= det.threshold) == (y == 1)).mean())}
                       for k, v in probes.items()},
            "photoreal_vs_real_auroc": _auroc(y[np.isin(group, ["generated, photoreal", "real, coco", "real, imagenet"])],
                                              prob[np.isin(group, ["generated, photoreal", "real, coco", "real, imagenet"])])
            if (group == "generated, photoreal").any() else None}


def confidently_wrong(models: list[str], sets: dict[str, Path]) -> list[dict]:
    """Final verdicts through `Detector.predict`: the share that are confident ("ai"/"real") and wrong."""
    from synthcheck.inference.detector import Detector

    rows = []
    for name in models:
        det = Detector.load(name)
        for key, folder in sets.items():
            files, y = _files(folder)
            t0 = time.perf_counter()
            preds = det.predict([str(p) for p in files])
            seconds = time.perf_counter() - t0
            v = np.array([p.verdict for p in preds])
            truth = np.where(y == 1, "ai", "real")
            confident = np.isin(v, ["ai", "real"])
            pv = np.array([p.pixel_verdict for p in preds])  # the score and threshold alone: no domain rule
            row = {"model": name, "set": key, "n": len(files),
                   "confident_right": float((confident & (v == truth)).mean()),
                   "confident_wrong": float((confident & (v != truth)).mean()),
                   "uncertain": float((v == "uncertain").mean()),
                   "pixels_only_confident_wrong": float((np.isin(pv, ["ai", "real"]) & (pv != truth)).mean()),
                   "out_of_domain": float(np.mean([bool(p.warnings) for p in preds])),
                   "routed": {m: int(c) for m, c in zip(*np.unique([p.model for p in preds], return_counts=True))},
                   "img_s": round(len(files) / seconds, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _f(v, digits=3):
    return "–" if v is None else f"{v:.{digits}f}"


def write_markdown(result: dict, path: Path) -> None:
    """The tables README quotes, regenerated from study.json."""
    out = [f"# Full-size images: measurements\n\nMade by `{result['command'].strip()}`; figures in `study.json`.\n"]
    if "cross_generator" in result:
        rows = result["cross_generator"]
        keys = list(rows[0]["sets"])
        out += ["## Cross-generator table\n", "| model | " + " | ".join(f"{k} acc / AUROC / AP" for k in keys)
                + " | mean acc / AUROC / AP |", "|---" * (len(keys) + 2) + "|"]
        for r in rows:
            cells = [f"{_f(m['accuracy'])} / {_f(m['roc_auc'])} / {_f(m['average_precision'])} (n={m['n']})"
                     for m in r["sets"].values()]
            mm = r["mean"]
            out.append(f"| {r['model']} | " + " | ".join(cells)
                       + f" | {_f(mm['accuracy'])} / {_f(mm['roc_auc'])} / {_f(mm['average_precision'])} |")
        out.append("")
    if "variants" in result:
        out += ["## Photo-model candidates (selection: lowest validation loss)\n",
                "| run | input | val loss (epoch) | held-out acc / AUROC | GAN crops acc / AUROC | train s | what |",
                "|---|---|---|---|---|---|---|"]
        for r in result["variants"]:
            out.append(f"| {r['model']} | {r['size']} px {r['policy']} | {_f(r['val_loss'], 4)} ({r['epoch']}) | "
                       f"{_f(r['heldout']['accuracy'])} / {_f(r['heldout']['roc_auc'])} | {_f(r['gan']['accuracy'])} / "
                       f"{_f(r['gan']['roc_auc'])} | {r['train_time_s']:.0f} | {r['notes'] or ''} |")
        out.append("")
    if "policies" in result:
        rows = result["policies"]
        keys = [k for k in rows[0] if k not in ("model", "policy", "own_policy")]
        out += ["## Input policy\n", "| model | policy | " + " | ".join(f"{k} acc / AUROC" for k in keys) + " |",
                "|---" * (len(keys) + 2) + "|"]
        for r in rows:
            pol = f"**{r['policy']}** (its own)" if r["own_policy"] else r["policy"]
            out.append(f"| {r['model']} | {pol} | " + " | ".join(f"{_f(r[k]['accuracy'])} / {_f(r[k]['roc_auc'])}"
                                                             for k in keys) + " |")
        out.append("")
    if "content" in result:
        c = result["content"]
        out += [f"## Content shortcut ({c['model']}, held-out part, n={c['n']})\n",
                "| group | n | mean P(AI) | called AI |", "|---|---|---|---|"]
        for g, v in c["by_content"].items():
            out.append(f"| {g} | {v['n']} | {_f(v['mean_p_ai'])} | {v['called_ai']:.0%} |")
        out += ["", "| probe | ROC-AUC | accuracy |", "|---|---|---|"]
        for k, v in c["probes"].items():
            out.append(f"| {k} | {_f(v['roc_auc'])} | {_f(v['accuracy'])} |")
        out += ["", f"Photoreal generated vs real photos only: ROC-AUC {_f(c.get('photoreal_vs_real_auroc'))}.", ""]
    if "ood_signals" in result:
        o = result["ood_signals"]
        out += ["## Other out-of-domain signals (besides image size)\n",
                "| features | distance | GAN vs held-out ROC-AUC | held-out flagged | GAN crops flagged |", "|---|---|---|---|---|"]
        for tag, rows in o["feature_distance"].items():
            for name, r in rows.items():
                out.append(f"| {tag} | {name} | {_f(r['gan_vs_heldout_roc_auc'])} | {r['heldout_flagged']:.1%} | "
                           f"{r['gan_flagged']:.1%} |")
        out += ["", "Flag threshold: the 95th percentile of the validation images' distance.", "",
                "| uncertain band ± | held-out: confident & right / wrong | GAN crops: confident & right / wrong |",
                "|---|---|---|"]
        for b in o["bands"]:
            out.append(f"| {b['band']} | {b['heldout']['confident_right']:.1%} / {b['heldout']['confident_wrong']:.1%} | "
                       f"{b['gan']['confident_right']:.1%} / {b['gan']['confident_wrong']:.1%} |")
        out.append("")
    if "confidently_wrong" in result:
        out += ["## Confidently wrong (final verdicts of `Detector.predict`)\n",
                "| model | set | n | confident & right | confident & wrong | uncertain | out-of-domain warning | "
                "confident & wrong by pixels alone | scored by | img/s (2 CPU cores) |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in result["confidently_wrong"]:
            out.append(f"| {r['model']} | {r['set']} | {r['n']} | {r['confident_right']:.1%} | {r['confident_wrong']:.1%} | "
                       f"{r['uncertain']:.1%} | {r['out_of_domain']:.1%} | {r['pixels_only_confident_wrong']:.1%} | "
                       + ", ".join(f"{k} {v}" for k, v in r["routed"].items())
                       + f" | {r.get('img_s', '–')} |")
        out.append("")
    path.write_text("\n".join(out))


def ood_signals(photo_name: str, heldout: Path, gan: Path) -> dict:
    """Could anything but image size tell the GAN crops from in-domain images? Feature-space distance to the
    training images (the photo model's own penultimate features and the frozen ImageNet ones; Mahalanobis on
    PCA-whitened features, and 5-NN cosine), and how wide an uncertain band would have to be."""
    import torch
    from sklearn.decomposition import PCA

    from synthcheck.data.folders import load_imageset
    from synthcheck.data.preprocess import PreprocessSpec
    from synthcheck.data.splits import make_splits
    from synthcheck.inference.detector import Detector
    from synthcheck.inference.scoring import to_input
    from synthcheck.models.registry import build_model, last_linear

    det = Detector.load(photo_name)
    spec = PreprocessSpec(det.spec.image_size, "tiles", tiles=1)  # the centre tile: one feature vector per image
    cfg = det.config
    full = load_imageset(DIFFUSIONDB, spec, progress=False)
    sp = make_splits([full], cfg["train"]["val_fraction"], cfg["train"]["seed"], None, True, cfg["train"]["test_fraction"])
    parts = {"train": sp.train.images, "val": sp.val.images, "test": sp.test.images,
             "gan": load_imageset(gan, spec, progress=False).images}
    pretrained, _ = build_model("mobilenet_v2", "imagenet")
    out = {}
    for tag, model in (("photo model", det.model), ("frozen ImageNet", pretrained.eval())):
        head = last_linear(model)
        feats: list = []
        hook = head.register_forward_hook(lambda mod, inp, o: feats.append(inp[0].detach().float()))
        f = {}
        with torch.inference_mode():
            for k, x in parts.items():
                feats.clear()
                for i in range(0, len(x), 16):
                    model(to_input(torch.as_tensor(x[i:i + 16])))
                f[k] = torch.cat(feats).numpy()
        hook.remove()
        rows = {}
        pca = PCA(32, whiten=True, random_state=0).fit(f["train"])
        maha = {k: np.sqrt((pca.transform(v) ** 2).sum(1)) for k, v in f.items()}
        unit = {k: v / np.linalg.norm(v, axis=1, keepdims=True) for k, v in f.items()}
        knn = {k: 1 - np.sort(v @ unit["train"].T, 1)[:, -5:].mean(1) for k, v in unit.items()}
        for name, dist in (("Mahalanobis (PCA-32, whitened)", maha), ("5-NN cosine distance", knn)):
            cut = np.quantile(dist["val"], 0.95)  # flag 5% of in-domain validation images
            y = np.r_[np.zeros(len(dist["test"])), np.ones(len(dist["gan"]))]
            rows[name] = {"gan_vs_heldout_roc_auc": _auroc(y, np.r_[dist["test"], dist["gan"]]),
                          "heldout_flagged": float((dist["test"] > cut).mean()),
                          "gan_flagged": float((dist["gan"] > cut).mean())}
        out[tag] = rows
    # uncertain bands: confident-and-wrong on GAN crops vs confident-and-right on the held-out part (scores alone)
    bands = []
    sets = {"heldout": _files(heldout), "gan": _files(gan)}
    probs = {k: np.array([p.prob_ai for p in det.predict([str(f) for f in fs])]) for k, (fs, _) in sets.items()}
    for band in (0.1, 0.2, 0.3, 0.4, 0.45):
        row = {"band": band}
        for k, (_, y) in sets.items():
            p, thr = probs[k], det.threshold
            conf = np.abs(p - thr) >= band
            wrong = (p >= thr) != (y == 1)
            row[k] = {"confident_right": float((conf & ~wrong).mean()), "confident_wrong": float((conf & wrong).mean())}
        bands.append(row)
    return {"feature_distance": out, "bands": bands}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "fullsize")
    ap.add_argument("--photo", default="photo", help="the photo model (bundled name or directory)")
    ap.add_argument("--variants", nargs="*", default=[], help="other photo-model runs to tabulate beside it")
    ap.add_argument("--skip", nargs="*", default=[], choices=["cross", "policy", "content", "ood", "wrong"])
    args = ap.parse_args(argv)
    if not DIFFUSIONDB.exists():
        sys.exit(f"needs {DIFFUSIONDB} (see ../shared/data/README.md)")
    from synthcheck.inference.detector import Detector

    work = ROOT / "runs" / "fullsize_study"
    work.mkdir(parents=True, exist_ok=True)
    heldout = heldout_folder(Detector.load(args.photo), work)
    gan = extract(GAN, work / "gan-crops") if not (work / "gan-crops").exists() else work / "gan-crops"
    sets = {"diffusiondb-heldout": heldout / "diffusiondb-vs-coco-imagenet", "gan-crops": gan / "cnndetection-gan-crops"}
    args.out.mkdir(parents=True, exist_ok=True)
    result = json.loads((args.out / "study.json").read_text()) if (args.out / "study.json").exists() else {}
    result["command"] = "python scripts/fullsize_study.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.variants:
        result["variants"] = variants_table(args.variants, sets)
        (args.out / "study.json").write_text(json.dumps(result, indent=2))
    if "cross" not in args.skip:
        result["cross_generator"] = cross_table(["default", "robust", args.photo, "auto"],
                                                [CIFAKE_TEST, *sets.values()], cifake_sample(work))
        (args.out / "study.json").write_text(json.dumps(result, indent=2))
    if "policy" not in args.skip:
        result["policies"] = policy_table([args.photo, "default"], list(sets.values()))
        (args.out / "study.json").write_text(json.dumps(result, indent=2))
    if "content" not in args.skip:
        result["content"] = content_study(args.photo, sets["diffusiondb-heldout"])
        (args.out / "study.json").write_text(json.dumps(result, indent=2))
    if "ood" not in args.skip:
        result["ood_signals"] = ood_signals(args.photo, sets["diffusiondb-heldout"], sets["gan-crops"])
        (args.out / "study.json").write_text(json.dumps(result, indent=2))
    if "wrong" not in args.skip:
        result["confidently_wrong"] = confidently_wrong(["auto", args.photo, "default", "robust"], sets)
        (args.out / "study.json").write_text(json.dumps(result, indent=2))
    write_markdown(result, args.out / "README.md")
    print(f"wrote {args.out / 'study.json'} and {args.out / 'README.md'}")


if __name__ == "__main__":
    main()
