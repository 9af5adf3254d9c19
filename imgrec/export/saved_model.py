"""SavedModel export with serving signatures that take raw images.

Signatures:
  serving_default: `images`, uint8 [N, H, W, 3] of any size (resized in the
    graph to the model's input size).
  serving_bytes: `image_bytes`, string [N] of encoded JPEG/PNG/BMP/GIF/WebP
    bytes, decoded in the graph under imgrec's decode policy
    (`imgrec.data.decode.decode_bytes`: EXIF orientation, transparency on
    white, 16-bit PNG), so a served image gets the pixels it gets everywhere
    else.
Both return `probabilities` float32 [N, C], `top_k_indices` int32 [N, k] and
`top_k_labels` string [N, k].
"""

import os

import keras
import tensorflow as tf

from imgrec import fileio
from imgrec import tasks
from imgrec.config import DEFAULT_MAX_IMAGE_PIXELS
from imgrec.data import decode
from imgrec.data import ops
from imgrec.run_folder import LABELS_NAME
from imgrec.run_folder import INPUT_SPEC_NAME
from imgrec.run_folder import write_labels_file


def export_saved_model(model, class_names, path, top_k=5,
                       max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
  """Writes `model` as a SavedModel with image and bytes signatures.

  The folder is written under a temporary name and renamed into place, so a
  crash never leaves a half-written export at `path`.

  Args:
    model: a Keras model taking raw pixels [N, H, W, C] and returning
      probabilities [N, num_classes].
    class_names: class names in label order.
    path: output folder.
    top_k: number of top classes in the outputs (capped at the classes).
    max_image_pixels: `serving_bytes` refuses, from the header and before
      decoding, images declaring more pixels.

  Returns:
    `path`.
  """
  size, channels = tasks.model_input_spec(model)
  k = int(min(top_k, len(class_names)))
  labels = tf.constant(list(class_names), dtype=tf.string)

  def outputs(pixels):
    probabilities = tf.cast(model(pixels, training=False), tf.float32)
    top = tf.math.top_k(probabilities, k=k)
    return {"probabilities": probabilities,
            "top_k_indices": top.indices,
            "top_k_labels": tf.gather(labels, top.indices)}

  def serve_images(images):
    pixels = ops.resize(ops.to_channels(images, channels), size)
    return outputs(pixels)

  def serve_bytes(image_bytes):
    pixels = tf.map_fn(
        lambda b: ops.resize(decode.decode_bytes(
            b, channels, max_pixels=max_image_pixels, target_size=size),
                             size),
        image_bytes,
        fn_output_signature=tf.TensorSpec([size[0], size[1], channels],
                                          tf.float32))
    return outputs(pixels)

  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.add_endpoint(
      "serving_default", serve_images,
      input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8,
                                     name="images")])
  archive.add_endpoint(
      "serving_bytes", serve_bytes,
      input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
  with fileio.atomic_dir(path) as tmp:
    archive.write_out(tmp, verbose=False)
    write_labels_file(os.path.join(tmp, LABELS_NAME), class_names)
    # What a client needs to decode images as serving_bytes does.
    fileio.write_json(os.path.join(tmp, INPUT_SPEC_NAME),
                      {"image_size": list(size), "channels": channels})
  return path
