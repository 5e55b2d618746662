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
