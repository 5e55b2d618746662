"""Train/val/test from loaded sets: explicit splits kept, seeded stratified parts carved where absent, and
files byte-identical to training files kept out of validation and test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .folders import CLASS_NAMES, ImageSet


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified (train_idx, val_idx) with `fraction` of each class in val."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    if fraction <= 0:
        return idx, idx[:0]
    tr, va = train_test_split(idx, test_size=fraction, random_state=seed, stratify=labels)
    return np.sort(tr), np.sort(va)


def digest_set(digests: np.ndarray) -> set[bytes]:
    return {d.tobytes() for d in digests}


def overlap_mask(digests: np.ndarray, others: Iterable[bytes]) -> np.ndarray:
    """True for each row whose content digest is in `others` (byte-identical files)."""
    others = others if isinstance(others, (set, frozenset)) else set(others)
    return np.array([d.tobytes() in others for d in digests], dtype=bool)


@dataclass
class Splits:
    train: ImageSet
    val: ImageSet
    test: ImageSet | None
    report: dict


def strata(s: ImageSet) -> np.ndarray:
    """Each image's source group ('ai:diffusion', 'real:coco'; the label is part of it), for stratified
    splits; groups too small to be split (under 4 images) are pooled per label."""
    groups = np.asarray(s.groups, dtype=str)
    names, counts = np.unique(groups, return_counts=True)
    small = set(names[counts < 4])
    if small:
        groups = np.array([f"{CLASS_NAMES[y]}:(small groups)" if g in small else g for g, y in zip(groups, s.labels)])
        names, counts = np.unique(groups, return_counts=True)
    return groups if counts.min() >= 2 else s.labels


def concat_sets(sets: list[ImageSet]) -> ImageSet | None:
    """One ImageSet from several (same spec), groups and twins kept; None when all are empty."""
    sets = [s for s in sets if len(s)]
    if not sets:
        return None
    if len(sets) == 1:
        return sets[0]
    return ImageSet(np.concatenate([s.images for s in sets]), np.concatenate([s.labels for s in sets]),
                    np.concatenate([s.splits for s in sets]), sum((s.names for s in sets), []),
                    np.concatenate([s.digests for s in sets]), np.concatenate([s.sizes for s in sets]),
                    "+".join(s.source for s in sets), sets[0].spec, sum((s.skipped for s in sets), []),
                    np.concatenate([s.groups for s in sets]), np.concatenate([s.twins for s in sets]))


def make_splits(sources: list[ImageSet], val_fraction: float, seed: int, test: list[ImageSet] | None = None,
                exclude_duplicates: bool = True, test_fraction: float = 0.0) -> Splits:
    """Train/val/test from loaded sets: explicit splits kept, val carved from train if absent.

    With `test_fraction` and no test data, a seeded test part is held out first (stratified by source
    group, e.g. ai:diffusion/real:coco/real:imagenet), then val from the rest.

    Files byte-identical to a training file are reported and (by default) removed
    from val and test, so evaluation never scores an image the model trained on.
    """
    concat = concat_sets
    tr_parts, va_parts, te_parts = [], [], list(test or [])
    for s in sources:
        if s.has_split("train") or s.has_split("val") or s.has_split("test"):
            tr_parts.append(s.split("train"))
            va_parts.append(s.split("val"))
            te_parts.append(s.split("test"))
            tr_parts.append(s.split(""))  # unsplit leftovers count as training data
        else:
            tr_parts.append(s)
    train, val, tst = concat(tr_parts), concat(va_parts), concat(te_parts)
    if train is None:
        raise ValueError("no training images found")
    report: dict = {}
    if tst is None and test_fraction > 0:
        tr_idx, te_idx = stratified_split(strata(train), test_fraction, seed)
        train, tst = train.subset(tr_idx), train.subset(te_idx)
        report["test_held_out"] = {"fraction": test_fraction, "seed": seed, "stratified_by": "label+source"}
    if val is None:
        tr_idx, va_idx = stratified_split(strata(train), val_fraction, seed)
        train, val = train.subset(tr_idx), train.subset(va_idx)
        report["val_carved_from_train"] = {"fraction": val_fraction, "seed": seed}
    train_set = digest_set(train.digests)
    dup_val = overlap_mask(val.digests, train_set)
    report["val_identical_to_train"] = int(dup_val.sum())
    if exclude_duplicates and dup_val.any():
        val = val.subset(np.flatnonzero(~dup_val))
    if tst is not None:
        dup_test = overlap_mask(tst.digests, train_set | digest_set(val.digests))
        report["test_identical_to_train_or_val"] = int(dup_test.sum())
        if exclude_duplicates and dup_test.any():
            tst = tst.subset(np.flatnonzero(~dup_test))
    report["within_train_duplicates"] = int(len(train) - len(train_set))
    report["excluded"] = bool(exclude_duplicates)
    report["sizes"] = {"train": len(train), "val": len(val), "test": len(tst) if tst is not None else 0}
    return Splits(train, val, tst, report)
