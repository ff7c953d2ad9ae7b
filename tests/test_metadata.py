"""A .keras file carries its class names and input rule inside (kcnn.metadata): a copy of a run's
model.keras, alone in another folder, predicts as the run folder does; a file without them gets
integer labels and one line saying so."""

import json
import shutil
import zipfile

import keras
import numpy as np
from helpers import run_cli, tiny_train

from kcnn import metadata
from kcnn.export import export_run
from kcnn.models import create_model
from kcnn.prediction import load_classifier, predict


def test_a_copied_model_file_predicts_the_labels_and_probabilities_of_its_run_folder(photo_folder, fake_data_dir,
                                                                                   tmp_path):
    shapes = tiny_train(None, tmp_path / "shapes", dataset=str(photo_folder), epochs=1, batch_size=8,
                        image_size=(24, 24)).run_dir
    digits = tiny_train(fake_data_dir, tmp_path / "digits", epochs=1).run_dir
    photo, drawing = next(photo_folder.glob("disc/*.jpg")), tmp_path / "drawing.png"
    from PIL import Image

    Image.fromarray(np.pad(np.full((12, 4), 255, np.uint8), 40)).save(drawing)  # a large "1" on black
    for run_dir, image, rule in ((shapes, photo, "colour"), (digits, drawing, "digits")):
        alone = tmp_path / "lonely" / f"{run_dir.name}.keras"
        alone.parent.mkdir(exist_ok=True)
        shutil.copy(run_dir / "model.keras", alone)
        inside = metadata.read(alone)
        assert inside["input"]["rule"] == rule and inside["card"]["test_accuracy"] > 0
        from_run, from_copy = (predict([image], [path], top_k=3)[0] for path in (run_dir / "model.keras", alone))
        assert from_copy["top_k"] == from_run["top_k"]  # names and probabilities, exactly
    assert from_run["label"] in "0123456789" and load_classifier(alone).digit_style
    assert predict([photo], [tmp_path / "lonely" / "shapes.keras"])[0]["label"] in ("bar", "cross", "disc")


def test_keras_reads_only_its_own_members_and_a_rewrite_replaces_kcnns(tmp_path):
    path = tmp_path / "m.keras"
    keras.utils.set_random_seed(0)
    create_model("net24k", (28, 28, 1), 3).save(path)
    before = keras.saving.load_model(path, safe_mode=True).predict(np.zeros((1, 28, 28, 1), np.uint8), verbose=0)
    metadata.write(path, metadata.make(["a", "b", "c"], (28, 28, 1), "letters"))
    metadata.write(path, metadata.make(["x", "y", "z"], (28, 28, 1), "letters"))
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist().count(metadata.MEMBER) == 1
        assert json.loads(archive.read(metadata.MEMBER))["class_names"] == ["x", "y", "z"]
    after = keras.saving.load_model(path, safe_mode=True).predict(np.zeros((1, 28, 28, 1), np.uint8), verbose=0)
    np.testing.assert_array_equal(after, before)
    assert load_classifier(path).class_names == ["x", "y", "z"] and not load_classifier(path).digit_style


def test_a_file_without_class_names_gets_integer_labels_and_one_line_saying_so(tmp_path):
    create_model("net24k", (28, 28, 1), 10).save(tmp_path / "plain.keras")  # from any Keras code
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp_path / "black.png")
    result = run_cli("predict", tmp_path / "black.png", "--model", tmp_path / "plain.keras")
    assert result.exit_code == 0
    notes = [line for line in result.output.splitlines() if "no class names" in line]
    assert notes == [f"{tmp_path / 'plain.keras'}: no class names in the file or beside it; its classes are "
                     f"shown as 0..9"]
    assert result.output.splitlines()[-1].split()[2] in [str(i) for i in range(10)]


def test_a_text_file_given_as_a_model_is_not_a_keras_model_file(tmp_path):
    (tmp_path / "notamodel.keras").write_text("just notes")
    (tmp_path / "one.png").write_bytes(b"")
    result = run_cli("predict", tmp_path / "one.png", "--model", tmp_path / "notamodel.keras")
    assert result.exit_code == 1 and "not a Keras model file" in result.output
    assert "File not found" not in result.output


def test_an_exported_file_and_its_onnx_graph_carry_the_names(fake_data_dir, tmp_path):
    run_dir = tiny_train(fake_data_dir, tmp_path / "run", dataset="fashion_mnist", epochs=1).run_dir
    dest, _ = export_run(run_dir, tmp_path / "fashion.keras")
    (tmp_path / "fashion.json").unlink()  # the card beside it is not needed
    clf = load_classifier(dest)
    assert clf.class_names[:2] == ["T-shirt/top", "Trouser"] and clf.input_rule == "gray"
