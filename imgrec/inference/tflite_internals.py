"""Every private TFLite and LiteRT internal imgrec touches, in this one module.

`tests/test_export_path.py` fails naming each one a TensorFlow or LiteRT
release removes (`missing_internals`), and no other imgrec module touches
them:

1. `tensorflow.lite.python.schema_py_generated`: the TFLite flatbuffer
   schema's object API, to add a metadata buffer to a converted model
   (`tflite_metadata.attach`). TensorFlow ships no public writer.
2. `tensorflow.lite.python.util.modify_model_io_type`: what the converter
   does for `inference_input_type=tf.uint8`, applied to the quantization
   debugger's int8 model (the debugger has no such option).
3. `TFLiteConverter._experimental_disable_per_channel`: one weight scale a
   tensor instead of one a channel; the quantization debugger reads the
   flag from its converter on every quantization.
4. `Interpreter._get_ops_details` and `Interpreter._get_tensor_details`
   (LiteRT): the ops of a model and their tensors' names, to prove an int8
   file integer (`tflite.float_ops`).
"""

# pylint: disable=g-import-not-at-top

_PER_CHANNEL_FLAG = "_experimental_disable_per_channel"


def tflite_schema():
  """The TFLite flatbuffer schema module (object API: ModelT, BufferT, ...)."""
  from tensorflow.lite.python import schema_py_generated
  return schema_py_generated


def with_uint8_io(flatbuffer):
  """int8 TFLite bytes with uint8 input and output instead of float ones."""
  import tensorflow as tf
  from tensorflow.lite.python import util
  return util.modify_model_io_type(flatbuffer, tf.uint8, tf.uint8)


def set_per_channel(converter, per_channel):
  """Sets whether `converter` quantizes weights with a scale per channel."""
  setattr(converter, _PER_CHANNEL_FLAG, not per_channel)


def ops_details(interpreter):
  """[{"op_name", "inputs", "outputs", ...}] of a LiteRT Interpreter's ops."""
  return interpreter._get_ops_details()  # pylint: disable=protected-access


def tensor_name(interpreter, index):
  """The name of tensor `index` of a LiteRT Interpreter's first subgraph."""
  return interpreter._get_tensor_details(index, 0)["name"]  # pylint: disable=protected-access


def _internals():
  """(name, present) for every internal this module relies on."""
  import importlib
  import tensorflow as tf
  from ai_edge_litert.interpreter import Interpreter
  out = []
  for module, names in (
      ("tensorflow.lite.python.schema_py_generated",
       ("Model", "ModelT", "BufferT", "MetadataT")),
      ("tensorflow.lite.python.util", ("modify_model_io_type",))):
    try:
      found = importlib.import_module(module)
    except ImportError:
      found = None
    out += [(f"{module}.{name}", hasattr(found, name)) for name in names]
  converter = tf.lite.TFLiteConverter([], tf.Module())
  out.append((f"TFLiteConverter.{_PER_CHANNEL_FLAG}",
              hasattr(converter, _PER_CHANNEL_FLAG)))
  for name in ("_get_ops_details", "_get_tensor_details"):
    out.append((f"ai_edge_litert Interpreter.{name}",
                hasattr(Interpreter, name)))
  return out


def missing_internals():
  """Names of the internals these TensorFlow and LiteRT lack (empty when all
  are there)."""
  return [name for name, present in _internals() if not present]
