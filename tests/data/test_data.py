"""ImageFolder/CSV datasets: masks beside images, splits, grayscale -> 3 channels, clear errors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from gradcam_kit.data.datasets import (
    ImageDataset,
    csv_samples,
    image_folder_samples,
    is_mask_file,
    load_split,
    split_samples,
    verify_images,
)
from gradcam_kit.data.preprocess import build_transform
from gradcam_kit.data.synthetic import write_image_folder


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    write_image_folder(root, {"train": 10, "test": 4}, size=32, seed=0, progress=False)
    return root


def test_masks_are_attached_not_listed_as_images(dataset_root):
    samples, names = image_folder_samples(dataset_root / "train")
    assert names == ["normal", "opacity"]
    assert len(samples) == 10
    assert not any(is_mask_file(s.path) for s in samples)
    assert all((s.mask is not None) == (s.label == 1) for s in samples)
    assert all(s.mask.name == s.path.stem + "_mask.png" for s in samples if s.mask)


def test_items_grayscale_to_three_channels_with_aligned_masks(dataset_root):
    dataset = ImageDataset.from_source(
        dataset_root, "test", transform=build_transform(48, mean=(0, 0, 0), std=(1, 1, 1)), mask_size=(48, 48), return_index=True
    )
    image, label, mask, index = dataset[2]  # samples are ordered by class: normal, then opacity
    assert image.shape == (3, 48, 48) and image.dtype == torch.float32
    torch.testing.assert_close(image[0], image[2])  # grayscale replicated
    assert label == 1 and index == 2
    assert mask.shape == (48, 48) and mask.dtype == torch.bool and mask.any()
    _, label0, mask0, _ = dataset[0]
    assert label0 == 0 and not mask0.any()
    assert dataset.class_counts().tolist() == [2, 2]


def test_csv_matches_image_folder(dataset_root):
    from_csv, names = csv_samples(dataset_root / "train.csv")
    from_folder, _ = image_folder_samples(dataset_root / "train")
    assert names == ["normal", "opacity"]
    key = lambda s: (s.path.resolve(), s.label, s.mask.resolve() if s.mask else None)  # noqa: E731
    assert sorted(map(key, from_csv)) == sorted(map(key, from_folder))
    assert load_split(dataset_root, "train")[1] == names


def test_csv_integer_labels(tmp_path):
    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    Image.new("L", (8, 8)).save(tmp_path / "b.png")
    (tmp_path / "data.csv").write_text("path,label\na.png,0\nb.png,1\n")
    samples, names = csv_samples(tmp_path / "data.csv")
    assert names == ["0", "1"] and [s.label for s in samples] == [0, 1]


def test_split_is_stratified_and_seeded(dataset_root):
    samples, _ = image_folder_samples(dataset_root / "train")
    train, val = split_samples(samples, 0.2, seed=1)
    assert len(train) + len(val) == len(samples)
    assert {s.label for s in val} == {0, 1}
    assert not {s.path for s in train} & {s.path for s in val}
    assert split_samples(samples, 0.2, seed=1) == (train, val)
    with pytest.raises(ValueError, match="val_fraction"):
        split_samples(samples, 1.0)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dataset folder"):
        image_folder_samples(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no CSV file"):
        csv_samples(tmp_path / "missing.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no class folders"):
        image_folder_samples(tmp_path / "empty")
    (tmp_path / "empty" / "normal").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        image_folder_samples(tmp_path / "empty")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    (tmp_path / "bad.csv").write_text(f"path,label\n{broken},x\n")
    samples, _ = csv_samples(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="cannot read image"):
        verify_images(samples)
    (tmp_path / "nolabel.csv").write_text("file,class\na.png,0\n")
    with pytest.raises(ValueError, match="'path' and 'label'"):
        csv_samples(tmp_path / "nolabel.csv")
    (tmp_path / "ghost.csv").write_text("path,label\nghost.png,0\n")
    with pytest.raises(ValueError, match="does not exist"):
        csv_samples(tmp_path / "ghost.csv")
