"""ResidentImages: the same examples and episodes as the dataset views, by one gather."""

from __future__ import annotations

import pytest
import torch

from relgraph.data import (
    EpisodeSampler,
    FewShotDataset,
    InMemoryDataset,
    RotatedClasses,
    TensorDataset,
)
from relgraph.data.resident import ResidentImages, resident_images


def images(n: int = 40, classes: int = 8, channels: int = 1, side: int = 6,
           dtype: torch.dtype = torch.uint8) -> InMemoryDataset:
    g = torch.Generator().manual_seed(0)
    if dtype == torch.uint8:
        x = torch.randint(0, 256, (n, channels, side, side), generator=g, dtype=torch.uint8)
    else:
        x = torch.rand(n, channels, side, side, generator=g)
    return InMemoryDataset(x, torch.arange(n) % classes, [f"c{i}" for i in range(classes)],
                           [f"a{i % 2}" for i in range(classes)])


def views() -> dict[str, FewShotDataset]:
    base = images()
    return {
        "plain": base,
        "float": images(dtype=torch.float32),
        "rgb": RotatedClasses(images(channels=3)),
        "rotated": RotatedClasses(base),
        "angles": RotatedClasses(base, [180, 90]),
        "subset of rotated": RotatedClasses(base).select_classes([5, 0, 30, 17]),
        "rotated subset": RotatedClasses(base.select_alphabets(["a1"])),
        "rotated twice": RotatedClasses(RotatedClasses(base, [0, 90]), [0, 270, 180]),
    }


@pytest.mark.parametrize("name", list(views()))
def test_same_examples_as_get_batch(name):
    ds = views()[name]
    resident = ResidentImages(ds)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(1))
    assert torch.equal(resident.get_batch(idx), ds.get_batch(idx))
    assert torch.equal(resident[3][0], ds[3][0]) and resident[3][1] == ds[3][1]
    assert resident.class_names == ds.class_names
    assert torch.equal(resident.targets, ds.targets)
    assert resident.preprocessing == ds.preprocessing


def test_cpu_holds_the_stored_tensor_without_copy():
    base = images()
    resident = ResidentImages(RotatedClasses(base))
    assert resident.images is base.images and resident.base is base


@pytest.mark.parametrize("unlabelled", [0, 2])
def test_same_episodes_for_the_same_seed(unlabelled):
    ds = RotatedClasses(images(n=80, classes=10)).select_classes(range(3, 37))
    resident = ResidentImages(ds)
    sampler = EpisodeSampler(ds, 5, 2, 3, episodes_per_batch=3, seed=7,
                             n_unlabelled=unlabelled, n_distractors=1 if unlabelled else 0)
    for batch in range(5):
        old, new = sampler.episode_batch(ds, batch), sampler.episode_batch(resident, batch)
        for field in ("support", "query", "support_labels", "query_labels", "class_ids",
                      "unlabelled"):
            a, b = getattr(old, field), getattr(new, field)
            assert (a is None and b is None) or torch.equal(a, b), (batch, field)


def test_features_keep_their_shape():
    ds = TensorDataset(torch.randn(30, 16), torch.arange(30) % 5)
    resident = ResidentImages(ds.select_classes([4, 1, 2]))
    idx = torch.arange(len(resident))
    assert resident.get_batch(idx).shape == (len(resident), 16)
    assert torch.equal(resident.get_batch(idx), ds.select_classes([4, 1, 2]).get_batch(idx))


class OnDemand(FewShotDataset):
    def load(self, index: int) -> torch.Tensor:
        return torch.zeros(1, 4, 4)


class Noisy(InMemoryDataset):
    def get_batch(self, indices: torch.Tensor) -> torch.Tensor:
        return super().get_batch(indices) + 1


def test_datasets_not_in_one_tensor_are_refused_or_left_alone():
    lazy = OnDemand(torch.arange(4) % 2, ["x", "y"])
    with pytest.raises(ValueError, match="OnDemand is not held in one tensor.*read on demand"):
        ResidentImages(lazy)
    assert resident_images(lazy) is lazy
    # a subclass that reads its own way (here: adds noise) is not bypassed
    noisy = Noisy(torch.zeros(4, 1, 2, 2), torch.arange(4) % 2, ["x", "y"])
    assert resident_images(RotatedClasses(noisy)).get_batch(torch.tensor([0])).min() == 1
    with pytest.raises(ValueError, match="not held in one tensor"):
        ResidentImages(RotatedClasses(noisy))


def test_what_cannot_turn_is_refused():
    features = RotatedClasses(TensorDataset(torch.randn(8, 5), torch.arange(8) % 2))
    with pytest.raises(ValueError, match="rotates its examples, but they are feature vectors"):
        ResidentImages(features)
    wide = RotatedClasses(InMemoryDataset(torch.rand(4, 1, 2, 3), torch.arange(4) % 2,
                                          ["x", "y"]))
    with pytest.raises(ValueError, match=r"non-square images \(2x3\) turned by 90"):
        ResidentImages(wide)
    upside_down = RotatedClasses(wide.dataset, [0, 180])  # half turns keep the shape
    idx = torch.arange(len(upside_down))
    assert torch.equal(ResidentImages(upside_down).get_batch(idx), upside_down.get_batch(idx))


def test_resident_images_reuses_a_resident_dataset():
    resident = ResidentImages(images())
    assert resident_images(resident) is resident
    assert resident_images(resident, "cpu") is resident


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_residency_gives_the_same_examples():
    ds = RotatedClasses(images(n=64, classes=8))
    resident = ResidentImages(ds, "cuda")
    assert resident.images.is_cuda
    idx = torch.randperm(len(ds))
    out = resident.get_batch(idx)
    assert out.is_cuda and torch.equal(out.cpu(), ds.get_batch(idx))
