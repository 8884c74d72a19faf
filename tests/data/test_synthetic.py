"""Synthetic chest-X-ray data: determinism, masks, lesion size, no global-statistics shortcut."""

from __future__ import annotations

import torch

from gradcam_kit import cli
from gradcam_kit.data.datasets import image_folder_samples, load_mask
from gradcam_kit.data.synthetic import (
    CLASS_NAMES,
    MAX_LESION_FRACTION,
    SyntheticXRayDataset,
    generate,
    generate_sample,
    is_positive,
)


def test_deterministic_by_seed_and_index():
    a = generate_sample(7, seed=3, size=48)
    b = generate_sample(7, seed=3, size=48)
    c = generate_sample(7, seed=4, size=48)
    assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask)
    assert not torch.equal(a.image, c.image)
    # the same sample whatever batch it is drawn in
    images, masks, _ = generate(4, seed=3, size=48, start=5)
    assert torch.equal(images[2], a.image) and torch.equal(masks[2], a.mask)


def test_labels_interleave_and_masks_only_for_positives():
    images, masks, labels = generate(40, seed=0, size=48)
    assert images.dtype == torch.uint8 and images.shape == (40, 48, 48)
    assert labels.sum().item() == 20
    assert [is_positive(i) for i in range(4)] == [False, True, False, True]
    has_mask = masks.flatten(1).any(1)
    assert torch.equal(has_mask, labels.bool())


def test_lesion_is_small_inside_the_lungs_and_brighter():
    images, masks, labels = generate(30, seed=1, size=64)
    fractions = masks[labels == 1].float().mean((1, 2))
    assert (fractions > 0).all() and (fractions <= MAX_LESION_FRACTION).all()
    # the same scene drawn without the lesion differs only at the lesion, which is brighter
    for i in torch.nonzero(labels)[:, 0][:5].tolist():
        plain = generate_sample(i, seed=1, size=64, positive=False)
        diff = images[i].float() - plain.image.float()
        assert diff[masks[i]].mean() > 10  # a visible opacity (uint8 levels)
        near = torch.nn.functional.max_pool2d(masks[i][None, None].float(), 9, 1, 4)[0, 0].bool()
        assert diff[~near].abs().max() <= 3


def test_global_mean_std_classifier_stays_near_chance():
    torch.manual_seed(0)
    images, _, labels = generate(400, seed=0, size=48)
    x = images.float().flatten(1) / 255
    features = torch.stack([x.mean(1), x.std(1)], 1)
    features = (features - features.mean(0)) / features.std(0)
    weight = torch.zeros(2, requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(features @ weight + bias, labels.float())
        loss.backward()
        return loss

    optimizer.step(closure)
    accuracy = ((features @ weight + bias > 0).long() == labels).float().mean().item()
    assert accuracy < 0.65, accuracy  # training accuracy: a stricter test than held-out


def test_in_memory_dataset_and_transform():
    from gradcam_kit.data.preprocess import build_transform

    dataset = SyntheticXRayDataset(4, size=32, seed=2, split="val", transform=build_transform(32), return_mask=True)
    image, label, mask = dataset[1]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert label == 1 and mask.any()
    assert dataset.classes == CLASS_NAMES
    # the val split draws other images than the train split
    train = SyntheticXRayDataset(4, size=32, seed=2, split="train")
    assert not torch.equal(train[1][0], SyntheticXRayDataset(4, size=32, seed=2, split="val")[1][0])


def test_synth_command_writes_image_folder_with_masks(tmp_path, capsys):
    out = tmp_path / "synth"
    assert cli.main(["synth", "--out", str(out), "--size", "32", "--train", "6", "--val", "2", "--test", "0", "--quiet"]) == 0
    assert "train: 3 normal, 3 opacity" in capsys.readouterr().out
    samples, names = image_folder_samples(out / "train")
    assert names == list(CLASS_NAMES) and len(samples) == 6  # masks are not images
    positives = [s for s in samples if s.label == 1]
    assert all(s.mask is not None for s in positives)
    assert all(s.mask is None for s in samples if s.label == 0)
    expected = generate_sample(1, seed=0, size=32)
    assert torch.equal(load_mask(positives[0].mask), expected.mask)
    assert (out / "train.csv").read_text().splitlines()[0] == "path,label,mask"
    assert not (out / "test").exists()
