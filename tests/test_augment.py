import torch

from synthcheck.data.augment import AugmentConfig, augment


def test_shift_and_flip_keep_shape_and_pixels():
    x = torch.rand(16, 3, 32, 32)
    y = augment(x, AugmentConfig(flip=True, shift=2), torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    # integer shifts/flips only move pixels: value histograms stay within the input's range
    assert y.min() >= x.min() and y.max() <= x.max()


def test_flip_only_is_exact_mirror_or_identity():
    x = torch.rand(32, 3, 8, 8)
    y = augment(x, AugmentConfig(flip=True, shift=0), torch.Generator().manual_seed(0))
    for a, b in zip(x, y):
        assert torch.equal(a, b) or torch.equal(a.flip(2), b)


def test_everything_off_is_identity_and_rotation_changes():
    x = torch.rand(4, 3, 16, 16)
    assert torch.equal(augment(x, AugmentConfig(flip=False, shift=0)), x)
    assert not torch.allclose(augment(x, AugmentConfig(flip=False, shift=0, rotate=30, zoom=0.2)), x)


def test_robustness_damage_switches():
    x = torch.rand(8, 3, 32, 32)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    base = AugmentConfig(flip=False, shift=0)
    for name in ("blur", "jpeg", "rescale"):
        y = augment(x, AugmentConfig(flip=False, shift=0, **{name: 1.0}), gen())
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
        # every image is damaged, and the damage removes high-frequency detail from noise images
        assert all(not torch.allclose(a, b, atol=1e-3) for a, b in zip(x, y)), name
        hf = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean()  # noqa: E731
        assert hf(y) < hf(x), name
    assert torch.equal(augment(x, base, gen()), x)  # switches off: untouched
    y = augment(x, AugmentConfig(flip=False, shift=0, jpeg=0.5), gen())
    changed = sum(not torch.allclose(a, b, atol=1e-3) for a, b in zip(x, y))
    assert 0 < changed < 8  # probability 0.5 leaves some images alone


def test_processing_augmentation_saves_either_label_and_the_packs_save_reaches_real_photos_only():
    """`process`: a shared random save (JPEG or WebP), so it changes pixels of both classes alike; `pack_save_real`:
    a real photo's stored image saved as the AI packs were before it is cropped, an AI image never; off, the random
    stream of a recipe is the one it always had."""
    import numpy as np
    import torch

    from synthcheck.data.augment import AugmentConfig, augment, random_crops
    from synthcheck.data.transforms import save_jpeg

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((8, 3, 32, 32), dtype=np.float32))
    off = AugmentConfig(flip=False, shift=0)
    assert torch.equal(augment(x, off, torch.Generator().manual_seed(0)), x)
    on = augment(x, AugmentConfig(flip=False, shift=0, process=1.0), torch.Generator().manual_seed(0))
    assert all(not torch.equal(on[i], x[i]) for i in range(8))
    images = torch.from_numpy(rng.integers(0, 255, (4, 3, 64, 64), dtype=np.uint8))
    sizes = torch.tensor([[64, 64]] * 4)
    labels = torch.tensor([0, 1, 0, 1])
    plain = random_crops(images, sizes, 64, 0.0, torch.Generator().manual_seed(1))
    saved = random_crops(images, sizes, 64, 0.0, torch.Generator().manual_seed(1), labels, pack_save_real=1.0)
    for i in (1, 3):
        assert torch.equal(saved[i], plain[i])
    for i in (0, 2):
        want = save_jpeg(images[i].permute(1, 2, 0).numpy(), 92, "4:2:0")
        assert torch.equal((saved[i] * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(want))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    random_crops(images, sizes, 32, 0.0, g1)
    random_crops(images, sizes, 32, 0.0, g2, labels, pack_save_real=0.0)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))
