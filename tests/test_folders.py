"""Folders of images: the split, decoding as `kcnn predict` does, skipped files, streaming, train to predict."""

import json
import shutil

import numpy as np
import pytest
from helpers import BROKEN_PHOTOS, FAST, run_cli, tiny_train, write_photo_folder

from kcnn import data
from kcnn.config import resolve
from kcnn.data import folders
from kcnn.images import read_image, to_model_input
from kcnn.training import check_batch_size


def _names(paths):
    return sorted(f"{p.split('/')[-2]}/{p.split('/')[-1]}" for p in paths)


def test_a_plain_folder_splits_each_class_by_file_name_hash(photo_folder):
    splits = folders.list_splits(photo_folder, test_split=0.25).split_val(0.2)
    assert splits.class_names == ("bar", "cross", "disc")
    # 13 files per class (12 drawings, 1 broken): round(13 * 0.25) = 3 test, round(10 * 0.2) = 2 val
    for split, count in (("test", 3), ("val", 2), ("train", 8)):
        assert np.bincount(splits.labels[split], minlength=3).tolist() == [count] * 3, split
    everything = sum((splits.files[s] for s in ("train", "val", "test")), [])
    assert len(set(everything)) == len(everything) == 39
    # The same files land in the same splits however the folder is copied or listed again.
    copy = shutil.copytree(photo_folder, photo_folder.parent / "copy")
    again = folders.list_splits(copy, test_split=0.25).split_val(0.2)
    for split in ("train", "val", "test"):
        assert _names(again.files[split]) == _names(splits.files[split])
    shutil.rmtree(copy)


def test_split_folders_give_val_and_test_and_must_name_the_same_classes(tmp_path):
    root = tmp_path / "photos"
    for split, count in (("train", 8), ("val", 3), ("test", 4)):
        write_photo_folder(root / split, per_class=count, seed=len(split))
    splits = folders.list_splits(root, test_split=0.2).split_val(0.5)
    assert [len(splits.files[s]) for s in ("train", "val", "test")] == [27, 12, 15]  # broken files included
    assert all(f"/{split}/" in p for split in ("train", "val", "test") for p in splits.files[split])
    # a val/ folder is the validation split: --val-split cuts nothing from train/, so a batch may be all of it
    info = data.load_info(str(root))
    alone = data.load_info(str(root / "train"))  # the same 27 files as a plain folder: 21 after its test cut
    assert info.train_size(0.5) == 27 and alone.train_size(0.5) == 21 - round(21 * 0.5)
    check_batch_size(resolve(str(root), info.image_shape, batch_size=27, val_split=0.5), info)
    with pytest.raises(ValueError, match="batch_size is larger than the 27 training images"):
        check_batch_size(resolve(str(root), info.image_shape, batch_size=28, val_split=0.5), info)
    shutil.rmtree(root / "test" / "bar")
    with pytest.raises(folders.FolderError, match=r"photos/test: .*class_names"):
        folders.list_splits(root, test_split=0.2)


def test_folder_images_are_decoded_as_kcnn_predict_brings_them_to_the_model(photo_folder):
    info = data.load_info(str(photo_folder), image_size=(24, 40))
    assert info.image_shape == (24, 40, 3)  # colour files present: RGB
    images, labels, paths, skipped = data.decode_split(info, "test")
    assert images.shape == (len(paths), 24, 40, 3) and images.dtype == np.uint8
    for image, path in zip(images, paths):
        np.testing.assert_array_equal(image, to_model_input(read_image(path), (24, 40, 3)))


def test_unreadable_files_are_skipped_and_named(photo_folder):
    ds = data.load_datasets(data.load_info(str(photo_folder)), batch_size=4, val_split=0.2)
    assert sorted(p.split("/")[-1] for p, _ in ds.skipped) == sorted(name for _, name, _ in BROKEN_PHOTOS)
    reasons = {p.split("/")[-1]: reason for p, reason in ds.skipped}
    assert reasons == {"broken.jpg": "truncated or corrupt image data", "notes.png": "not an image PIL can read",
                       "empty.jpg": "empty file (0 bytes)"}
    counted = sum(int(x.shape[0]) for x, _ in ds.train) + ds.num_val + sum(int(x.shape[0]) for x, _ in ds.test)
    assert counted == 36


@pytest.mark.parametrize("policy", ["flip_shift", "altflip_shift"])
def test_a_folder_too_large_for_memory_streams_the_same_batches_from_its_files(photo_folder, policy):
    info = data.load_info(str(photo_folder), image_size=(20, 20))

    def batches(ds, split):
        return [(x.numpy(), y.numpy()) for x, y in getattr(ds, split)]

    options = dict(batch_size=5, val_split=0.2, seed=3, augment=policy)
    held, streamed = data.load_datasets(info, **options), data.load_datasets(info, memory_budget=0, **options)
    for epoch in (0, 1):
        held.set_epoch(epoch)
        streamed.set_epoch(epoch)
        for split in ("train", "val", "test"):
            pairs = list(zip(batches(held, split), batches(streamed, split), strict=True))
            for (x0, y0), (x1, y1) in pairs:
                np.testing.assert_array_equal(x0, x1)
                np.testing.assert_array_equal(y0, y1)
    assert (held.num_train, held.num_val) == (streamed.num_train, streamed.num_val)


def test_gray_folders_train_gray_unless_channels_say_otherwise(tmp_path):
    root = write_photo_folder(tmp_path / "gray", per_class=4, modes=("L",))
    assert data.load_info(str(root)).image_shape == (64, 64, 1)
    assert data.load_info(str(root), channels=3, image_size=(32, 32)).image_shape == (32, 32, 3)


@pytest.mark.parametrize("content, problem", [("broken", "none of the 6 train images can be read"),
                                              ("none", "class folders (a, b) hold no images")])
def test_a_folder_without_a_readable_image_is_a_one_line_error(tmp_path, content, problem):
    root = tmp_path / "photos"
    for kind in ("a", "b"):
        (root / kind).mkdir(parents=True)
        for i in range(4):
            if content == "broken":
                (root / kind / f"{i}.jpg").write_bytes(b"not a jpeg")
            else:
                (root / kind / f"{i}.txt").write_text("notes")
    result = run_cli("train", root, "--output", tmp_path / "run", "--test-split", "0.25", "--epochs", "1",
                     "--batch-size", "2")
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert problem in lines[-1] and lines[-1].startswith(f"Error: {root}")
    assert not (tmp_path / "run").exists()


def test_image_size_is_for_folders(fake_data_dir):
    with pytest.raises(ValueError, match=r"mnist has 28x28x1 images; .*Received: image_shape=\(32, 32, 1\)"):
        data.load_info("mnist", fake_data_dir, image_size=(32, 32))


def test_train_evaluate_predict_and_export_a_folder_with_class_names(photo_folder, tmp_path):
    result = tiny_train(None, tmp_path / "run", dataset=str(photo_folder), epochs=1, image_size=(32, 32),
                        **{**FAST, "batch_size": 4})
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["dataset"]["class_names"] == ["bar", "cross", "disc"]
    assert record["dataset"]["image_shape"] == [32, 32, 3] and record["settings"]["image_size"] == [32, 32]
    assert len(record["dataset"]["skipped_files"]) == 3 and result.metrics["skipped_files"] == 3

    evaluated = run_cli("evaluate", tmp_path / "run" / "model.keras", photo_folder, "--output", tmp_path / "eval")
    assert evaluated.exit_code == 0, evaluated.output
    evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert evaluation["accuracy"] == pytest.approx(result.metrics["test_accuracy"])
    assert evaluation["examples"] == result.metrics["test_examples"] == 9

    image = next((photo_folder / "disc").glob("*.png"))
    predicted = run_cli("predict", "--model", tmp_path / "run" / "model.keras", image, "--format", "json")
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.output)[0]["label"] in ("bar", "cross", "disc")

    exported = run_cli("export", tmp_path / "run", tmp_path / "shapes.keras")
    assert exported.exit_code == 0, exported.output
    card = json.loads((tmp_path / "shapes.json").read_text())
    assert card["class_names"] == ["bar", "cross", "disc"] and "--image-size 32 32" in card["command"]


def test_a_folder_runs_under_runs_by_its_name(photo_folder, tmp_path, monkeypatch):
    from kcnn.config import TrainConfig
    from kcnn.runs import RunFolder

    monkeypatch.chdir(tmp_path)
    folder, resume = RunFolder.resolve(TrainConfig(dataset=str(photo_folder)), None, False)
    assert folder.path.resolve() == tmp_path.resolve() / "runs" / "shapes-cnn3-1" and not resume


@pytest.mark.slow
def test_a_streamed_folder_run_resumed_after_ctrl_c_replays_the_uninterrupted_run(photo_folder, tmp_path,
                                                                                   monkeypatch):
    from helpers import InterruptAt

    monkeypatch.setattr(data, "MEMORY_BUDGET", 0)  # every split read from its files each epoch
    options = dict(dataset=str(photo_folder), epochs=2, image_size=(16, 16), **{**FAST, "batch_size": 4})
    straight = tiny_train(None, tmp_path / "straight", **options)
    with pytest.raises(KeyboardInterrupt):
        tiny_train(None, tmp_path / "resumed", callbacks=[InterruptAt(1)], **options)
    resumed = tiny_train(None, tmp_path / "resumed", **options)
    assert resumed.resumed_from_epoch == 1
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert [row[key] for row in resumed.history] == [row[key] for row in straight.history], key
    assert resumed.metrics["test_accuracy"] == straight.metrics["test_accuracy"]


def test_kcnn_data_counts_readable_images_and_names_the_unreadable_ones(photo_folder):
    result = run_cli("data", photo_folder)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == (f"folder {photo_folder}: 3 classes (bar, cross, disc); readable images: 27 train / 9 test; "
                        f"brought to 64x64x3")  # 12 drawings a class, a quarter of them held out to test
    assert sorted(line.split("/")[-1].split(":")[0] for line in lines[1:-1]) == ["broken.jpg", "empty.jpg",
                                                                                "notes.png"]
    assert lines[-1] == "3 unreadable files, which training and testing leave out"


@pytest.mark.parametrize("layout, message", [
    ("flat", "no class folders; put the images in one folder per class, {root}/CLASS/*.jpg (4 images lie "
             "directly in it)"),
    ("one_class", "one class folder (cats); a classifier needs at least 2, each in a folder of its own, "
                  "{root}/CLASS/*.jpg"),
    ("class_without_images", "no training image of class dogs after the test split; every class needs at "
                             "least one (add images or lower --test-split)"),
])
def test_folder_mistakes_get_one_line_before_anything_is_written(tmp_path, layout, message):
    from PIL import Image

    root = tmp_path / "photos"
    where = {"flat": [root] * 4, "one_class": [root / "cats"] * 4, "class_without_images": [root / "cats"] * 4}[layout]
    (root / "dogs").mkdir(parents=True) if layout == "class_without_images" else None  # an empty class folder
    for i, folder in enumerate(where):
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(folder / f"{i}.jpg")
    result = run_cli("train", root, "--output", tmp_path / "run", "--epochs", "1")
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [f"Error: {root}: " + message.format(root=root)]
    assert not (tmp_path / "run").exists()


def test_a_training_split_smaller_than_the_recipes_batch_is_one_batch_and_said_once(photo_folder, tmp_path):
    result = run_cli("train", photo_folder, "--output", tmp_path / "run", "--epochs", "1", "--model", "net24k",
                     "--image-size", "24", "24")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if "as one batch" in line]
    # 39 files, 3 of them broken: 30 train after the test cut, 27 after the validation cut
    assert notes == [f"the recipe's batch_size 64 is larger than the 27 training images of {photo_folder}: "
                     f"training on all of them as one batch (batch_size=27)"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["settings"]["batch_size"] == 27
    asked = run_cli("train", photo_folder, "--output", tmp_path / "asked", "--batch-size", "64", "--epochs", "1")
    assert asked.exit_code == 2 and "batch_size is larger than the 27 training images" in asked.output
