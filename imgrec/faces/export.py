"""Exports a face embedder: a SavedModel and TFLite files, checked against Keras.

`<model_dir>/export/embedder_saved_model/` serves uint8 face crops
[N, S, S, 3] -> unit embeddings ("embeddings"); `embedder.tflite` and
`embedder_<variant>.tflite` take float32 raw RGB pixels [1, S, S, 3] and
return the embedding before its L2 normalization (normalize it before
matching, as `Embedder` does). Both go through imgrec's one export path
(`export.saved_model.write_saved_model`, `export.tflite`: metadata in every
file); int8 goes through the export's calibration and integer check.
The face detector's networks go beside them (`export_face_detector`), so
that `--runtime=tflite` detects faces on LiteRT too.
"""

import logging
import os
import tempfile

import numpy as np

from imgrec import fileio
from imgrec import tasks
from imgrec.data import faces as faces_lib
from imgrec.errors import ImgrecError
from imgrec.export import saved_model as saved_model_lib
from imgrec.export import tflite as tflite_lib
from imgrec.faces import embedder as embedder_lib
from imgrec.inference import face_detect_lite
from imgrec.run_folder import RunFolder

logger = logging.getLogger("imgrec")


_OUTPUT = ("embedding", "The face's embedding before its L2 normalization: "
           "normalize it, then compare by cosine similarity.")


def export_embedder(model_dir, variants=("float",), calibration_faces=None):
  """Writes the embedder's SavedModel and TFLite files.

  Args:
    model_dir: an imgrec-faces train model_dir.
    variants: TFLite variants (float, fp16, dynamic, int8).
    calibration_faces: uint8 face crops [N, S, S, 3] for int8 (default: the
      run's training crops).

  Returns:
    {"saved_model": path, "tflite": {variant: path}, "face_detector":
    {network: path}} (the detector: `export_face_detector`).
  """
  run = RunFolder(model_dir)
  info = run.read_embedder_info()
  size, channels = int(info["image_size"]), int(info["channels"])
  model = tasks.load_model(run.best_model_path)
  if "int8" in variants:
    tflite_lib.check_int8_supported(model)
  os.makedirs(run.export_dir, exist_ok=True)
  spec = tasks.model_input(model)
  # The face embedding task gives the signature, the TFLite model and the
  # files' description.
  task = tasks.for_run(run)
  out = {"saved_model": saved_model_lib.write_saved_model(
      model, os.path.join(run.export_dir, embedder_lib.SAVED_MODEL_NAME),
      task.serving_endpoints(model, (), top_k=1,
                             max_image_pixels=task.config.max_image_pixels),
      input_spec={"image_size": list(spec.image_size),
                  "channels": spec.channels}), "tflite": {}}
  # TFLite gets the embedding before its L2 normalization (Embedder
  # normalizes every runtime's output), which int8 can have.
  with tflite_lib.Converter(task.tflite_model(model),
                            run.export_dir) as converter:
    for variant in variants:
      tflite_lib.check_variant(variant)
      path = os.path.join(run.export_dir, embedder_lib.tflite_name(variant))
      if variant == "int8":
        if calibration_faces is None:
          calibration_faces = _training_faces(run, size)
        images = embedder_lib.model_pixels(calibration_faces, channels)
        calibration = converter.calibrate(list(images))
        flatbuffer = calibration.quantize(keep_float=(), io="float",
                                          per_channel=True)
        tflite_lib.check_integer(flatbuffer, path)
      else:
        flatbuffer = converter.convert(variant)
      out["tflite"][variant] = tflite_lib.write_tflite(
          flatbuffer, path, model_input=converter.input,
          name=f"imgrec face embedder {info.get('name', '')}".strip(),
          description=task.describe(variant), output=_OUTPUT)
  out["face_detector"] = export_face_detector(run.export_dir)
  return out


def export_face_detector(export_dir):
  """Writes MTCNN's three networks as TFLite files, for detection on LiteRT.

  The networks are the ones `FaceDetector` builds (the mtcnn package's
  weights); `face_detect_lite.LiteFaceDetector` runs the files. PNet keeps
  a free height and width (LiteRT resizes its input to each pyramid level),
  RNet and ONet a free batch. Each goes through a SavedModel staged beside
  the output, as `tflite.Converter` does, and is written atomically.

  Returns:
    {network: path}.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  stages = faces_lib.FaceDetector().mtcnn_stages()
  paths = face_detect_lite.detector_paths(export_dir)
  os.makedirs(export_dir, exist_ok=True)
  for network, stage in zip(face_detect_lite.NETWORKS, stages):
    signature = [tf.TensorSpec(face_detect_lite.INPUT_SHAPES[network],
                               tf.float32, name=face_detect_lite.INPUT_NAME)]
    with tempfile.TemporaryDirectory(prefix=fileio.TEMP_PREFIX,
                                     dir=export_dir) as staged:
      saved_model_lib.archive(stage.model, [(
          "serving_default", _named_outputs(stage.model, network),
          signature)]).write_out(staged, verbose=False)
      flatbuffer = tf.lite.TFLiteConverter.from_saved_model(staged).convert()
    with fileio.atomic_write(paths[network], "wb") as f:
      f.write(flatbuffer)
  return paths


def _named_outputs(model, network):
  """The serving function of one MTCNN network: its outputs by name."""
  names = face_detect_lite.OUTPUTS[network]

  def serve(images):
    return dict(zip(names, model(images)))

  return serve


def _training_faces(run, size, limit=200):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  paths, _ = run.read_split("train")
  if not paths:
    raise ImgrecError(f"{run.splits_path} lists no training faces to "
                      "calibrate int8 with.")
  step = max(1, len(paths) // limit)
  faces = []
  for path in paths[::step][:limit]:
    with Image.open(path) as im:
      faces.append(np.asarray(im.convert("RGB").resize((size, size))))
  return np.stack(faces)
