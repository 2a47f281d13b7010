"""--data_on_device: CIFAR held on the training device as uint8 and augmented there in batches
(comixup.data.device_loader.DeviceLoader), checked on the CPU against the torchvision loaders."""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from torch.utils.data import DistributedSampler

from comixup.data.datasets import DataError, dataset_info, get_datasets
from comixup.data.device_loader import DeviceLoader, crop_flip_normalise, draw_crops_and_flips, get_device_loaders
from comixup.data.loaders import get_loaders

import main
from tests.support.runs import TEST_RE, TRAIN_PER_CLASS, TRAIN_RE, base_args, only_experiment

CPU = torch.device("cpu")


@pytest.fixture
def cifar_sets(cifar10_dir):
    return get_datasets("cifar10", str(cifar10_dir), labels_per_class=TRAIN_PER_CLASS)


def test_test_batches_equal_the_torchvision_test_transform(cifar_sets):
    train_set, _, test_set, _ = cifar_sets
    _, _, reference = get_loaders(train_set, None, test_set, batch_size=7, workers=0)
    _, _, on_device = get_device_loaders("cifar10", train_set, None, test_set, batch_size=7, device=CPU)
    assert len(on_device) == len(reference) == 3
    for (images, labels), (ref_images, ref_labels) in zip(on_device, reference, strict=True):
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
        assert torch.equal(images, ref_images)  # bit for bit: the same float32 operations
        assert torch.equal(labels, ref_labels)


@pytest.mark.parametrize("seed", [0, 1])
def test_crops_and_flips_equal_torchvision_with_the_same_parameters(cifar_sets, seed):
    train_set, _, _, _ = cifar_sets
    info = dataset_info("cifar10")
    base, indices = train_set.dataset, train_set.indices[:12]
    uint8 = torch.from_numpy(base.data[indices])
    top, left, flip = draw_crops_and_flips(len(indices), info.crop_padding, torch.Generator().manual_seed(seed))
    ours = crop_flip_normalise(uint8, top, left, flip, info.crop_padding, info.mean, info.std)
    to_tensor = T.Compose([T.ToTensor(), T.Normalize(info.mean, info.std)])
    for k, index in enumerate(indices):
        image = TF.crop(TF.pad(_pil(base, index), info.crop_padding), int(top[k]), int(left[k]), 32, 32)
        if flip[k]:
            image = TF.hflip(image)
        assert torch.equal(ours[k], to_tensor(image)), k
    # no shift and no flip: the un-augmented (test) transform
    centre = torch.full((len(indices),), info.crop_padding)
    plain = crop_flip_normalise(uint8, centre, centre, torch.zeros(len(indices), dtype=torch.bool),
                                info.crop_padding, info.mean, info.std)
    assert torch.equal(plain, torch.stack([to_tensor(_pil(base, i)) for i in indices]))


def _pil(cifar, index):
    from PIL import Image

    return Image.fromarray(cifar.data[index])


def test_crop_and_flip_draws_are_uniform():
    top, left, flip = draw_crops_and_flips(20000, 2, torch.Generator().manual_seed(0))
    for offsets in (top, left):
        counts = torch.bincount(offsets, minlength=5)
        assert counts.numel() == 5  # offsets 0..4 in the padded image, i.e. shifts -2..2
        assert ((counts / 20000 - 0.2).abs() < 0.015).all(), counts
    assert abs(flip.float().mean().item() - 0.5) < 0.015
    # no padding: no shift
    top, left, _ = draw_crops_and_flips(50, 0, torch.Generator().manual_seed(0))
    assert top.eq(0).all() and left.eq(0).all()


def test_training_batches_match_the_normal_loader_and_are_augmented(cifar_sets):
    train_set, _, test_set, _ = cifar_sets
    reference, _, _ = get_loaders(train_set, None, test_set, batch_size=25, workers=0)
    loader, _, _ = get_device_loaders("cifar10", train_set, None, test_set, batch_size=25, device=CPU)
    ours = list(loader)
    assert len(loader) == len(reference) == len(ours) == 3
    assert [tuple(x.shape) for x, _ in ours] == [tuple(x.shape) for x, _ in reference]
    # every training image once per epoch
    labels = torch.cat([y for _, y in ours])
    assert sorted(labels.tolist()) == sorted(train_set.dataset.targets[i] for i in train_set.indices)
    # augmented: compared with the plain (test-transform) images in the same order, only about
    # 1 in 50 (no shift in either direction, no flip: 1/5 x 1/5 x 1/2) comes out unchanged
    info = dataset_info("cifar10")
    plain = torch.cat([x for x, _ in DeviceLoader(loader.images, loader.labels, 25, info.mean, info.std, CPU,
                                                  train=False)])[loader._local_indices()]
    augmented = torch.cat([x for x, _ in ours])
    unchanged = sum(torch.equal(a, p) for a, p in zip(augmented, plain, strict=True))
    assert unchanged <= 6
    flipped_only = sum(torch.equal(a, p.flip(-1)) for a, p in zip(augmented, plain, strict=True))
    assert flipped_only <= 6


def test_order_and_augmentation_depend_on_seed_and_epoch_only(cifar_sets):
    train_set, _, test_set, _ = cifar_sets

    def epoch_batches(seed, epoch):
        loader = get_device_loaders("cifar10", train_set, None, test_set, batch_size=20, device=CPU, seed=seed)[0]
        for used in range(3):  # epochs run before do not matter
            loader.set_epoch(used)
            list(loader)
        loader.set_epoch(epoch)
        return torch.cat([x for x, _ in loader]), torch.cat([y for _, y in loader])

    images, labels = epoch_batches(0, 5)
    again_images, again_labels = epoch_batches(0, 5)
    assert torch.equal(images, again_images) and torch.equal(labels, again_labels)
    other_epoch, _ = epoch_batches(0, 6)
    other_seed, _ = epoch_batches(1, 5)
    assert not torch.equal(images, other_epoch) and not torch.equal(images, other_seed)


def test_subsets_and_validation_sets_are_respected(cifar10_dir):
    train_set, valid_set, test_set, _ = get_datasets("cifar10", str(cifar10_dir), labels_per_class=3,
                                                     valid_labels_per_class=2)
    train, valid, test = get_device_loaders("cifar10", train_set, valid_set, test_set, batch_size=8, device=CPU)
    base = train_set.dataset
    assert torch.equal(train.images, torch.from_numpy(base.data[train_set.indices]))
    assert train.labels.tolist() == [base.targets[i] for i in train_set.indices]
    assert len(train.images) == 30 and len(valid.images) == 20 and len(test.images) == 20
    _, reference_valid, _ = get_loaders(train_set, valid_set, test_set, batch_size=8, workers=0)
    for (images, labels), (ref_images, ref_labels) in zip(valid, reference_valid, strict=True):
        assert torch.equal(images, ref_images) and torch.equal(labels, ref_labels)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_shards_as_the_distributed_sampler_does(cifar_sets, world_size):
    train_set, _, test_set, _ = cifar_sets
    shards = [get_device_loaders("cifar10", train_set, None, test_set, batch_size=8, device=CPU, seed=4,
                                 rank=rank, world_size=world_size) for rank in range(world_size)]
    seen = []
    for rank, (train, _, test) in enumerate(shards):
        sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=4)
        assert len(train) == -(-len(sampler) // 8)
        train.set_epoch(2)
        batches = list(train)
        assert sum(len(y) for _, y in batches) == len(sampler)
        seen += train._local_indices().tolist()
        assert test._local_indices().tolist() == list(range(rank, len(test_set), world_size))
    # together the ranks cover every training image; padding repeats as few as needed
    assert set(seen) == set(range(len(train_set)))
    assert len(seen) == -(-len(train_set) // world_size) * world_size
    # the order is shared: rank r takes every world_size-th item of one permutation
    orders = [train._local_indices() for train, _, _ in shards]
    interleaved = torch.stack(orders, dim=1).flatten()[:len(train_set)]
    assert sorted(interleaved.tolist()) == list(range(len(train_set)))


def test_other_data_sets_and_bad_input_are_refused(tmp_path, cifar_sets):
    from comixup.data.synthetic import write_image_folder

    folder = write_image_folder(tmp_path / "imagenet", num_classes=2, per_class=2, size=16)
    train_set, _, test_set, _ = get_datasets("imagenet", str(folder))
    with pytest.raises(DataError, match="--data_on_device supports cifar10, cifar100"):
        get_device_loaders("imagenet", train_set, None, test_set, batch_size=4, device=CPU)
    with pytest.raises(DataError, match="uint8"):
        DeviceLoader(torch.zeros(4, 32, 32, 3), torch.zeros(4), 2, (0, 0, 0), (1, 1, 1), CPU, train=True)
    with pytest.raises(ValueError, match="uint8 batch"):
        crop_flip_normalise(torch.zeros(2, 32, 32, 3), torch.zeros(2), torch.zeros(2), torch.zeros(2).bool(), 2,
                            (0, 0, 0), (1, 1, 1))


def test_main_trains_and_evaluates_with_data_on_device(cifar10_dir, tmp_path, capsys, one_thread):
    root = tmp_path / "exp"
    assert main.main(base_args(cifar10_dir, root, "--data_on_device", "--comix", "False")) == 0
    out = capsys.readouterr().out.splitlines()
    assert sum(bool(TRAIN_RE.match(line)) for line in out) == 1
    assert any(line.startswith("=> data on cpu: 60 training and 20 test images") for line in out)
    checkpoint = only_experiment(root) / "checkpoint.pth.tar"
    test_lines = []
    for extra in (["--data_on_device"], []):
        assert main.main(base_args(cifar10_dir, tmp_path / "eval", "--evaluate", "--log_off", "--resume",
                                   str(checkpoint), *extra)) == 0
        test_lines.append([line for line in capsys.readouterr().out.splitlines() if TEST_RE.match(line)])
    assert test_lines[0] == test_lines[1] and len(test_lines[0]) == 1


@pytest.mark.parametrize("extra, fragment", [
    (["--data_on_device", "--workers", "2"], "drop --workers 2"),
    (["--data_on_device", "--dataset", "tiny-imagenet-200"], "--data_on_device supports cifar10 and cifar100"),
], ids=["workers", "dataset"])
def test_bad_data_on_device_flags_exit_2(cifar10_dir, tmp_path, capsys, extra, fragment):
    from tests.support.runs import assert_one_error_line

    assert main.main(base_args(cifar10_dir, tmp_path / "exp", *extra)) == 2
    assert_one_error_line(capsys, fragment)
