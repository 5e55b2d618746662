"""Left-out images re-scored as the copies users meet (`data.transforms.CONDITIONS`): the everyday panel applied to
both classes alike, and the processing swap. The swap's camera tables come per fold from the real photos that fold's
model trained on: a model that learnt the save is caught only if no left-out source lends its own save to the copies
it is judged on. Scores are cached beside each fold's own, tied to them and to the tables used.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..data.folders import ImageSet

log = logging.getLogger("synthcheck")


def condition_tiles(images: ImageSet, idx: np.ndarray, condition: str, spec, ctx=None) -> np.ndarray:
    """The stored images `idx` (cropped back to their decoded size), transformed as `data.transforms.CONDITIONS`
    names (with each image's label and `ctx` for the label-dependent swap), then tiled by the one shared
    preprocessing function, as the model sees any image."""
    from ..data.preprocess import fit
    from ..data.transforms import CONDITIONS

    fn, side = CONDITIONS[condition], images.images.shape[-1]
    return np.stack([fit(fn(np.ascontiguousarray(images.images[i][:, :min(h, side), :min(w, side)].transpose(1, 2, 0)),
                            int(images.labels[i]), ctx, int(i)), spec) for i, (h, w) in zip(idx, images.sizes[idx])])


def pool_camera_tables(cfg, pool) -> list:
    """Per pool image: the quantisation tables (luma, chroma, subsampling) of a real JPEG saved by something other
    than a standard IJG encoder (a camera's or an editor's own tables), else None. Read from the files' headers
    (the store keeps pixels only), so the swap can save AI images the way the fold's real photos were saved."""
    from ..data.folders import iter_source
    from ..data.store import digest
    from ..inference.jpeg_history import ijg_quality, parse_header

    found = {}
    for src in cfg.sources:
        for item in iter_source(src):
            head = parse_header(item.data) if item.label == 0 else None
            if head is None or head.table(0) is None or ijg_quality(head.table(0), head.table(1))[1]:
                continue
            if head.subsampling in ("4:4:4", "4:2:2", "4:2:0"):
                found[digest(item.data)] = (head.table(0), head.table(1), head.subsampling)
    return [found.get(d.tobytes()) for d in pool.pool.digests]


def unique_tables(tables) -> list:
    """Each distinct (luma, chroma, subsampling) once, in first-seen order."""
    seen, out = set(), []
    for t in tables:
        key = t[0].tobytes() + (b"" if t[1] is None else t[1].tobytes()) + t[2].encode()
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def fold_save_context(pool, tables: list, fold_of: dict, k: int, seed: int):
    """The swap's context for fold k: camera tables of the real photos fold k trained on, never of its left-out
    families (so no left-out source lends its own save to the copies it is judged on)."""
    from ..data.transforms import SaveContext

    out = unique_tables(t for t, f, y in zip(tables, pool.families, pool.pool.labels)
                        if t is not None and y == 0 and fold_of[f] != k)
    if not out:
        raise ValueError(f"fold {k}: no real photo it trained on carries camera tables, so the processing swap "
                         "cannot be made; leave 'processing swapped' out of this config's conditions")
    return SaveContext(tuple(out), seed)


def condition_scores(fdir: Path, images: ImageSet, scores, conditions: list[str], spec, ctx=None) -> dict:
    """A fold model's raw logits on its left-out images under each condition, kept beside its scores (and
    redone when the fold's own scores changed, i.e. the fold model was retrained)."""
    import hashlib

    from ..data.transforms import CONDITIONS
    from ..inference.scoring import score_logits
    from ..models.checkpoint import load_model

    out, model, idx, same_fn = {}, None, scores["index"], {}
    made_with = hashlib.sha1(np.ascontiguousarray(scores["logits"]).tobytes()).hexdigest()
    for c in conditions:
        if c not in CONDITIONS:
            raise ValueError(f"band_conditions: unknown condition {c!r}; known: {', '.join(CONDITIONS)}")
        if id(CONDITIONS[c].fn) in same_fn:  # one copy under two names: scored once
            out[c] = out[same_fn[id(CONDITIONS[c].fn)]]
            continue
        same_fn[id(CONDITIONS[c].fn)] = c
        tag = made_with
        if CONDITIONS[c].label_dependent and ctx is not None:
            tag = hashlib.sha1(made_with.encode() + b"".join(t[0].tobytes() for t in ctx.camera_tables)).hexdigest()
        path = fdir / f"scores_{c.replace(' ', '_').replace('(', '').replace(')', '').replace(':', '-')}.npz"
        if path.exists():
            cached = np.load(path)
            if np.array_equal(cached["index"], idx) and str(cached.get("made_with", "")) in (tag, ""):
                out[c] = cached["logits"]
                continue
        if model is None:
            model = load_model(fdir / "model")[0]
        log.info("%s: left-out images re-scored as %r", fdir.name, c)
        out[c] = np.concatenate([score_logits(model, condition_tiles(images, part, c, spec, ctx), batch_size=256)
                                 for part in np.array_split(idx, max(1, len(idx) // 256))])
        np.savez(path, index=idx, logits=out[c], made_with=tag)
    return out
