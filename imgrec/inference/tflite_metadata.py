"""Standard TFLite metadata for imgrec models: labels and input description inside the file.

MediaPipe Tasks' `ImageClassifier` (and the Android tooling) read a model's
metadata: what the input image is (RGB or grayscale, and the normalization
to apply to float input), and the class names of the output, packed into
the file as an associated `labels.txt`. imgrec writes that metadata itself,
with the `flatbuffers` package TensorFlow already depends on, following the
published TFLite metadata schema (`metadata_schema.fbs`, file identifier
"M001"): tflite-support cannot share an environment with TensorFlow 2.21,
and MediaPipe's own writers need a native module its wheel lacks.

The file stays a valid TFLite flatbuffer: the metadata is a buffer named
"TFLITE_METADATA" in the model's `metadata` table, and the labels file is a
zip archive appended after the flatbuffer, where readers look for it.
"""

import io
import json
import zipfile

import flatbuffers

from imgrec.inference import tflite_internals

METADATA_NAME = "TFLITE_METADATA"
LABELS_FILE = "labels.txt"
# A multi-label model's per-label thresholds: JSON {"class_names",
# "thresholds"}, as the run's thresholds.json. The schema has no type for
# them: an associated file of type UNKNOWN, which other readers pass over.
THRESHOLDS_FILE = "thresholds.json"
# A single-label model's open set: JSON {"score", "threshold",
# "unknown_label"}; the output's last column is the "unknown" decision.
OPEN_SET_FILE = "open_set.json"
_IDENTIFIER = b"M001"
_MIN_PARSER_VERSION = "1.0.0"

# Enum values and union tags of metadata_schema.fbs.
_UNKNOWN_FILE, _TENSOR_AXIS_LABELS = 0, 2
_RGB, _GRAYSCALE = 1, 2
_IMAGE_PROPERTIES = 2  # ContentProperties union tag.
_FEATURE_PROPERTIES = 1
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union tag.


def _strings(builder, values):
  return [builder.CreateString(v) for v in values]


def _vector(builder, offsets):
  builder.StartVector(4, len(offsets), 4)
  for offset in reversed(offsets):
    builder.PrependUOffsetTRelative(offset)
  return builder.EndVector()


def _float_vector(builder, values):
  builder.StartVector(4, len(values), 4)
  for v in reversed(values):
    builder.PrependFloat32(float(v))
  return builder.EndVector()


def _table(builder, fields):
  """Builds a table from (slot, kind, value); kinds: offset, int8, uint32."""
  builder.StartObject(max(slot for slot, _, _ in fields) + 1)
  for slot, kind, value in fields:
    if kind == "offset":
      builder.PrependUOffsetTRelativeSlot(slot, value, 0)
    elif kind == "int8":
      builder.PrependInt8Slot(slot, value, 0)
    elif kind == "uint8":
      builder.PrependUint8Slot(slot, value, 0)
    elif kind == "uint32":
      builder.PrependUint32Slot(slot, value, 0)
  return builder.EndObject()


def _input_tensor(b, *, image_size, channels, float_input, frames):
  """The input's TensorMetadata: an image (RGB or gray), or a clip of
  `frames` images (the schema has no clip content: a feature, described)."""
  height, width = image_size
  color = "RGB" if channels == 3 else "gray"
  if frames:
    content = _table(b, [(0, "uint8", _FEATURE_PROPERTIES),
                         (1, "offset", _empty_table(b))])
    name, text = _strings(b, ["clip", (
        f"{frames} frames of raw {color} pixels 0..255 [1, {frames}, "
        f"{height}, {width}, {channels}], sampled across the clip and "
        "resized to the model's input size.")])
  else:
    size = _table(b, [(0, "uint32", width), (1, "uint32", height)])
    image = _table(b, [(0, "int8", _RGB if channels == 3 else _GRAYSCALE),
                       (1, "offset", size)])
    content = _table(b, [(0, "uint8", _IMAGE_PROPERTIES),
                         (1, "offset", image)])
    name, text = _strings(b, ["image", f"Raw {color} pixels 0..255, resized "
                              "to the model's input size."])
  fields = [(0, "offset", name), (1, "offset", text), (3, "offset", content),
            (5, "offset", _stats(b, 255.0, 0.0))]
  if float_input:
    # Mean 0 and std 1: readers feed the raw pixels as they are.
    norm = _table(b, [(0, "offset", _float_vector(b, [0.0] * channels)),
                      (1, "offset", _float_vector(b, [1.0] * channels))])
    unit = _table(b, [(0, "uint8", _NORMALIZATION_OPTIONS),
                      (1, "offset", norm)])
    fields.append((4, "offset", _vector(b, [unit])))
  return _table(b, fields)


def _associated_file(b, name, description, kind):
  name, description = _strings(b, [name, description])
  return _table(b, [(0, "offset", name), (1, "offset", description),
                    (2, "int8", kind)])


def _output_tensor(b, output, labels, thresholds, open_set=False):
  """The output's TensorMetadata: class scores with the labels file (and
  the thresholds file), or another output without."""
  if not labels:
    name, text = _strings(b, output)
    return _table(b, [(0, "offset", name), (1, "offset", text)])
  files = [_associated_file(b, LABELS_FILE, "Class names, one a line, in "
                            "output order.", _TENSOR_AXIS_LABELS)]
  if thresholds:
    files.append(_associated_file(
        b, THRESHOLDS_FILE, "Each label's decision threshold (JSON: "
        "class_names, thresholds): the label is present when its score "
        "reaches it.", _UNKNOWN_FILE))
  if open_set:
    files.append(_associated_file(
        b, OPEN_SET_FILE, "The open set (JSON: score, threshold, "
        "unknown_label): the last column is 1 when the image is of no known "
        "class.", _UNKNOWN_FILE))
  content = _table(b, [(0, "uint8", _FEATURE_PROPERTIES),
                       (1, "offset", _empty_table(b))])
  name, text = _strings(b, output or ("probabilities", "Probability of each "
                                      "class (softmax)."))
  return _table(b, [(0, "offset", name), (1, "offset", text),
                    (3, "offset", content), (5, "offset", _stats(b, 1.0, 0.0)),
                    (6, "offset", _vector(b, files))])


def _stats(b, high, low):
  return _table(b, [(0, "offset", _float_vector(b, [high])),
                    (1, "offset", _float_vector(b, [low]))])


def build_metadata(*, name, description, image_size, channels, float_input,
                   version, frames=None, labels=True, output=None,
                   thresholds=False, open_set=False):
  """The ModelMetadata flatbuffer of an imgrec model.

  Args:
    name: model name.
    description: one sentence.
    image_size: (height, width) of the input (of each frame of a clip).
    channels: 1 or 3.
    float_input: the input is float32 raw 0..255 pixels (normalization mean
      0, std 1, so readers feed pixels as they are); else uint8.
    version: the model's version string.
    frames: the input is a clip of this many frames; None for an image.
    labels: the output is class scores, labeled by the associated labels
      file (`attach` packs it).
    output: (name, description) of the output: of class scores (default
      softmax probabilities), or of an output without labels.
    thresholds: the output's labels each have a threshold, in the
      associated thresholds file (`attach` packs it).
    open_set: the output's last column is an "unknown" decision, described
      by the associated open-set file (`attach` packs it).

  Returns:
    bytes.
  """
  b = flatbuffers.Builder(1024)
  input_md = _input_tensor(b, image_size=image_size, channels=channels,
                           float_input=float_input, frames=frames)
  output_md = _output_tensor(b, output, labels, thresholds, open_set)
  sub_name = b.CreateString(("clip_classifier" if frames else
                             "image_classifier") if labels else "model")
  subgraph = _table(b, [(0, "offset", sub_name),
                        (2, "offset", _vector(b, [input_md])),
                        (3, "offset", _vector(b, [output_md]))])
  model_name, model_desc, model_version, author, parser = _strings(
      b, [name, description, version, "imgrec", _MIN_PARSER_VERSION])
  root = _table(b, [(0, "offset", model_name), (1, "offset", model_desc),
                    (2, "offset", model_version),
                    (3, "offset", _vector(b, [subgraph])),
                    (4, "offset", author), (7, "offset", parser)])
  b.Finish(root, file_identifier=_IDENTIFIER)
  return bytes(b.Output())


def _empty_table(builder):
  builder.StartObject(0)
  return builder.EndObject()


def attach(flatbuffer, metadata, class_names=None, thresholds=None,
           open_set=None):
  """Returns the TFLite model with `metadata` and the labels file inside.

  Args:
    flatbuffer: the converter's model bytes.
    metadata: bytes from `build_metadata`.
    class_names: written as the associated labels file (None: no labels).
    thresholds: each class's threshold, written as the associated
      thresholds file (None: none).
    open_set: a dict, written as the associated open-set file (None: none).

  Returns:
    bytes: the model flatbuffer, then a zip holding the labels file (and
    the thresholds file).
  """
  schema = tflite_internals.tflite_schema()
  model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(flatbuffer, 0))
  buffer = schema.BufferT()
  buffer.data = list(metadata)
  model.buffers.append(buffer)
  entry = schema.MetadataT()
  entry.name = METADATA_NAME
  entry.buffer = len(model.buffers) - 1
  model.metadata = [m for m in (model.metadata or [])
                    if m.name != METADATA_NAME] + [entry]
  builder = flatbuffers.Builder(len(flatbuffer) + len(metadata) + 1024)
  builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
  out = io.BytesIO(bytes(builder.Output()))
  if class_names is not None:
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a") as archive:
      archive.writestr(LABELS_FILE, "".join(f"{n}\n" for n in class_names))
      if thresholds is not None:
        archive.writestr(THRESHOLDS_FILE, json.dumps({
            "class_names": list(class_names),
            "thresholds": [float(t) for t in thresholds]}, indent=2))
      if open_set is not None:
        archive.writestr(OPEN_SET_FILE, json.dumps(open_set, indent=2))
  return out.getvalue()


def _packed(path_or_bytes, name):
  """The text of a file packed into a TFLite file, or None."""
  data = path_or_bytes
  if isinstance(path_or_bytes, str):
    with open(path_or_bytes, "rb") as f:
      data = f.read()
  try:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
      return archive.read(name).decode("utf-8")
  except (zipfile.BadZipFile, KeyError):
    return None


def read_labels(path_or_bytes):
  """The class names packed into a TFLite file, or None."""
  text = _packed(path_or_bytes, LABELS_FILE)
  if text is None:
    return None
  return [line.rstrip("\n") for line in text.splitlines() if line.strip()]


def read_thresholds(path_or_bytes):
  """{class name: threshold} packed into a TFLite file, or None."""
  text = _packed(path_or_bytes, THRESHOLDS_FILE)
  if text is None:
    return None
  data = json.loads(text)
  return dict(zip(data["class_names"], map(float, data["thresholds"])))


def read_open_set(path_or_bytes):
  """The open-set record packed into a TFLite file ({"score", "threshold",
  "unknown_label"}), or None."""
  text = _packed(path_or_bytes, OPEN_SET_FILE)
  if text is None:
    return None
  data = json.loads(text)
  if not isinstance(data, dict):
    raise ValueError(f"{OPEN_SET_FILE} holds no JSON object")
  return data
