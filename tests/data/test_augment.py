"""Seeded affine augmentation."""

from __future__ import annotations

import pytest
import torch

from relgraph.data.augment import AffineAugment


def test_inactive_is_identity_and_active_is_seeded():
    x = torch.rand(4, 1, 12, 12)
    assert AffineAugment()(x, torch.Generator()) is x
    aug = AffineAugment(rotate=15, scale=0.1, shear=10, translate=0.1)
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)


def test_pure_translation_moves_the_image():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3:5, 3:5] = 1.0
    aug = AffineAugment(translate=0.25)
    g = torch.Generator().manual_seed(0)
    y = aug(x, g)
    assert float(y.sum()) == pytest.approx(float(x.sum()), rel=0.3)  # mass kept (interpolation)
    assert not torch.allclose(y, x)


def test_bad_input():
    with pytest.raises(ValueError, match="expects images"):
        AffineAugment(rotate=5)(torch.zeros(2, 8, 8), torch.Generator())
