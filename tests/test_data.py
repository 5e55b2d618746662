import shutil
import tarfile

import numpy as np
import pytest

from synthcheck.data.folders import load_imageset
from synthcheck.data.preprocess import PreprocessSpec
from synthcheck.data.splits import make_splits, stratified_split

from conftest import write_dataset

SPEC = PreprocessSpec(32)


@pytest.mark.parametrize("labels", [("REAL", "FAKE"), ("real", "fake"), ("real", "ai"), ("0_real", "1_fake")])
def test_label_layouts(tmp_path, labels):
    write_dataset(tmp_path, 5, splits=("",), labels=labels)
    s = load_imageset(tmp_path, SPEC, progress=False)
    assert len(s) == 10 and s.labels.sum() == 5
    assert set(s.splits) == {""}


def test_split_layout_and_tar_gz_match_folder(tmp_path):
    root = write_dataset(tmp_path / "d", 6, splits=("train", "test"))
    folder = load_imageset(root, SPEC, progress=False)
    assert set(folder.splits) == {"train", "test"}
    tgz = tmp_path / "d.tar.gz"
    with tarfile.open(tgz, "w:gz") as t:
        t.add(root, arcname="cifake")
    archived = load_imageset(tgz, SPEC, progress=False)
    assert sorted(map(bytes, folder.digests)) == sorted(map(bytes, archived.digests))
    assert folder.fingerprint() == archived.fingerprint()


def test_corrupt_files_skipped_and_named(tmp_path):
    root = write_dataset(tmp_path, 4, splits=("",))
    (root / "REAL" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (root / "FAKE" / "empty.png").write_bytes(b"")
    (root / "FAKE" / "notes.txt").write_text("hello")
    s = load_imageset(root, SPEC, progress=False)
    assert len(s) == 8
    names = {n for n, _ in s.skipped}
    assert names == {"REAL/broken.jpg", "FAKE/empty.png", "FAKE/notes.txt"}


def test_cache_reused_and_invalidated_by_content(tmp_path, monkeypatch):
    root = write_dataset(tmp_path / "d", 4, splits=("",))
    first = load_imageset(root, SPEC, progress=False)
    calls = []
    import synthcheck.data.folders as folders

    real = folders._decode_many
    monkeypatch.setattr(folders, "_decode_many", lambda items, *a, **k: calls.append(len(items)) or real(items, *a, **k))
    second = load_imageset(root, SPEC, progress=False)
    assert calls == [0] and np.array_equal(first.images, second.images)
    # change one file's content: exactly that file is decoded again
    shutil.copy(root / "FAKE" / "0.png", root / "REAL" / "1.png")
    third = load_imageset(root, SPEC, progress=False)
    assert calls == [0, 0] or calls[-1] <= 1
    i = third.names.index("REAL/1.png")
    j = third.names.index("FAKE/0.png")
    assert np.array_equal(third.images[i], third.images[j])


def test_stratified_split_is_seeded_and_balanced():
    labels = np.array([0] * 100 + [1] * 100)
    a = stratified_split(labels, 0.1, seed=3)
    b = stratified_split(labels, 0.1, seed=3)
    assert np.array_equal(a[1], b[1]) and len(a[1]) == 20 and labels[a[1]].sum() == 10
    assert not np.array_equal(a[1], stratified_split(labels, 0.1, seed=4)[1])


def test_identical_files_across_splits_excluded(tmp_path):
    root = write_dataset(tmp_path / "d", 10, splits=("train", "test"))
    shutil.copy(root / "train" / "REAL" / "0.png", root / "test" / "REAL" / "dup.png")
    shutil.copy(root / "train" / "FAKE" / "1.png", root / "test" / "FAKE" / "dup.png")
    s = load_imageset(root, SPEC, progress=False)
    splits = make_splits([s], 0.2, 0)
    assert splits.report["test_identical_to_train_or_val"] == 2
    assert len(splits.test) == 20
    kept = make_splits([s], 0.2, 0, exclude_duplicates=False)
    assert len(kept.test) == 22
    assert len(splits.val) == 4 and len(splits.train) == 16
