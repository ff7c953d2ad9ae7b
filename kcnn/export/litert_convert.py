"""``python -m kcnn.export.litert_convert MODEL.keras DEST.tflite [--calibration IMAGES.npy --float F.tflite]``

The child process of :mod:`kcnn.export.to_litert`, run with ``KERAS_BACKEND=tensorflow``: Keras'
LiteRT export of a channels_last ``.keras`` classifier. With ``--calibration`` (``(N, H, W, C)``
uint8 training images) it writes full-integer int8 (TensorFlow's representative-dataset
quantization, ``TFLITE_BUILTINS_INT8`` kernels only, uint8 input) and, with ``--float``, the float32
file too, whose size the model card compares.
"""

from __future__ import annotations

import argparse


def convert(model_path: str, dest: str, calibration=None) -> None:
    """Write ``dest`` from the ``.keras`` file ``model_path``; int8 when ``calibration`` images are given."""
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise SystemExit(f"LiteRT conversion runs with KERAS_BACKEND=tensorflow. Received: {keras.backend.backend()}")
    model = keras.saving.load_model(model_path, compile=False)
    signature = [tf.TensorSpec((None, *model.input_shape[1:]), tf.uint8, name="image")]
    options = {}
    if calibration is not None:
        options = dict(optimizations=[tf.lite.Optimize.DEFAULT], inference_input_type=tf.uint8,
                       representative_dataset=lambda: ([calibration[i:i + 1]] for i in range(len(calibration))),
                       target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]})
    model.export(dest, format="litert", input_signature=signature, verbose=False, **options)


def main(argv=None) -> None:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("dest")
    parser.add_argument("--calibration")
    parser.add_argument("--float", dest="float_dest")
    args = parser.parse_args(argv)
    calibration = np.load(args.calibration) if args.calibration else None
    convert(args.model, args.dest, calibration)
    if args.float_dest:
        convert(args.model, args.float_dest)


if __name__ == "__main__":
    main()
