"""MixUp and CutMix: soft targets weigh each image exactly by its share of the mixed pixels."""

from __future__ import annotations

import pytest
import torch

from medzoo.engine.mixing import CutMix, MixUp, build_mixer
from medzoo.errors import ConfigError, UnknownNameError


def labelled_constants(batch: int, spatial: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is the constant i and has label i: a mixed image's mean is the label mix it must carry."""
    labels = torch.arange(batch)
    return labels.float().view(-1, 1, *[1] * len(spatial)).expand(batch, 2, *spatial).clone(), labels


@pytest.mark.parametrize("mixer", [MixUp(alpha=0.4), CutMix(alpha=1.0)], ids=["mixup", "cutmix"])
@pytest.mark.parametrize("spatial", [(24, 20), (8, 12, 10)], ids=["2d", "3d"])
def test_soft_targets_carry_each_images_share(mixer, spatial):
    torch.manual_seed(0)
    images, labels = labelled_constants(8, spatial)
    changed = 0
    for _ in range(20):
        mixed, soft = mixer(images, labels, num_classes=8)
        assert mixed.shape == images.shape and soft.shape == (8, 8)
        torch.testing.assert_close(soft.sum(1), torch.ones(8))
        expected_mean = soft @ labels.float()  # share-weighted label = share-weighted pixel value
        torch.testing.assert_close(mixed.flatten(1).mean(1), expected_mean, atol=1e-5, rtol=0)
        changed += int(not torch.equal(mixed, images))
    assert changed >= 15  # p=1: nearly every batch mixes (an identity permutation or an empty box can leave one)
    if isinstance(mixer, CutMix):  # pasted, not blended: every pixel is one of the batch's own values
        assert torch.equal(mixed, mixed.round())


def test_probability_zero_and_single_image_batches_pass_through():
    images, labels = labelled_constants(4, (6, 6))
    for mixer, batch in ((CutMix(p=0.0), images), (MixUp(), images[:1])):
        mixed, soft = mixer(batch, labels[: len(batch)], num_classes=4)
        assert mixed is batch
        torch.testing.assert_close(soft, torch.nn.functional.one_hot(labels[: len(batch)], 4).float())


def test_draws_follow_the_global_seed():
    images, labels = labelled_constants(6, (10, 10))
    torch.manual_seed(3)
    first = CutMix()(images, labels, 6)
    torch.manual_seed(3)
    again = CutMix()(images, labels, 6)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_config_builds_mixers_and_names_bad_settings():
    assert build_mixer({"name": None}) is None and build_mixer(None) is None
    assert isinstance(build_mixer({"name": "cutmix", "alpha": 0.5, "p": 0.5}), CutMix)
    with pytest.raises(UnknownNameError, match="cutmix"):
        build_mixer({"name": "cutmx"})
    with pytest.raises(ConfigError, match="trainer.mix.alpha must be > 0"):
        build_mixer({"name": "mixup", "alpha": 0})
    with pytest.raises(ConfigError, match=r"trainer.mix.p must be in \[0, 1\]"):
        build_mixer({"name": "mixup", "p": 2})
