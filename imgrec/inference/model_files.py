"""Checks a model file before loading it: readable, of its kind, and free of side effects.

A SavedModel is a program: its graphs can read and write files, run
Python, or write summaries, and loading or calling it does so. A model
file from elsewhere is refused when any function that loading or serving
can run holds such an op, unless the user says they trust the file. Only
the variable saver's own save and restore functions may touch files.
"""

import os

from imgrec.errors import ImgrecError


def needs_tensorflow(path):
  """Whether loading the model at `path` imports TensorFlow: everything but
  a .tflite file, which LiteRT runs alone."""
  return not os.fspath(path or "").lower().endswith(".tflite")

# Ops that touch files, run Python, or otherwise reach outside the graph.
SIDE_EFFECT_OPS = frozenset({
    "ReadFile", "WriteFile", "MatchingFiles", "MatchingFilesDataset",
    "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice",
    "MergeV2Checkpoints", "ImmutableConst", "PrintV2", "Print",
    "PyFunc", "PyFuncStateless", "EagerPyFunc",
    "TFRecordDataset", "TFRecordDatasetV2", "FixedLengthRecordDataset",
    "FixedLengthRecordDatasetV2", "TextLineDataset", "CSVDataset",
    "CSVDatasetV2", "ExperimentalCSVDataset", "SqlDataset",
    "ExperimentalSqlDataset", "LMDBDataset", "ExperimentalLMDBDataset",
    "TFRecordReader", "TFRecordReaderV2", "TextLineReader",
    "TextLineReaderV2", "WholeFileReader", "WholeFileReaderV2",
    "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "IdentityReader",
    "IdentityReaderV2", "LMDBReader", "InitializeTableFromTextFile",
    "InitializeTableFromTextFileV2", "LoadAndRemapMatrix",
    "CacheDataset", "CacheDatasetV2", "SnapshotDataset", "SnapshotDatasetV2",
    "SaveDataset", "SaveDatasetV2", "LoadDataset", "DatasetToTFRecord",
    "ExperimentalDatasetToTFRecord", "CreateSummaryFileWriter",
    "CreateSummaryDbWriter", "WriteSummary", "WriteScalarSummary",
    "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary",
    "WriteGraphSummary", "WriteRawProtoSummary", "ImportEvent",
    "FlushSummaryWriter", "CloseSummaryWriter", "DebugIdentity",
    "DebugIdentityV2", "DebugIdentityV3", "DebugNumericSummary",
    "DebugNumericSummaryV2",
})


def check_tflite_file(path):
  """Raises unless `path` looks like a TFLite flatbuffer."""
  with open(path, "rb") as f:
    head = f.read(8)
  if len(head) < 8:
    raise ImgrecError(f"Model file {path} is empty or cut short "
                      f"({os.path.getsize(path)} bytes): copy it again.")
  if head[4:8] != b"TFL3":
    raise ImgrecError(f"Model file {path} is not a TFLite model (no TFL3 "
                      "identifier): it is damaged or another format named "
                      ".tflite.")


def _called_functions(node_defs):
  """Names of the functions that nodes call through their attributes."""
  out = set()
  for node in node_defs:
    for value in node.attr.values():
      if value.HasField("func"):
        out.add(value.func.name)
      if value.HasField("list"):
        out.update(f.name for f in value.list.func)
  return out


def side_effect_ops(saved_model_dir):
  """The side-effect ops that loading or calling a SavedModel can run.

  Every function reachable from the object graph (signatures, methods,
  resource initializers) and from the top-level graph is inspected, except
  the variable saver's save and restore functions.

  Returns:
    Sorted op names; empty for a clean model.

  Raises:
    ImgrecError: saved_model.pb is missing or not a SavedModel.
  """
  from google.protobuf import message  # pylint: disable=g-import-not-at-top
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top
  pb = os.path.join(saved_model_dir, "saved_model.pb")
  proto = saved_model_pb2.SavedModel()
  try:
    with open(pb, "rb") as f:
      proto.ParseFromString(f.read())
  except (OSError, message.DecodeError) as e:
    raise ImgrecError(f"{pb} is not a readable SavedModel ({e}): it is "
                      "damaged or cut short; export it again.") from e
  if not proto.meta_graphs:
    raise ImgrecError(f"{pb} holds no graph: export the model again.")
  found = set()
  for meta in proto.meta_graphs:
    graph = meta.graph_def
    library = {f.signature.name: f for f in graph.library.function}
    saver = meta.saver_def
    saver_nodes = {name.split(":")[0] for name in (
        saver.save_tensor_name, saver.restore_op_name,
        saver.filename_tensor_name) if name}
    nodes = [n for n in graph.node if n.name not in saver_nodes]
    found.update(n.op for n in nodes)
    todo = _called_functions(nodes) | set(
        meta.object_graph_def.concrete_functions.keys())
    seen = set()
    while todo:
      name = todo.pop()
      if name in seen or name not in library:
        continue
      seen.add(name)
      body = library[name].node_def
      found.update(n.op for n in body)
      todo |= _called_functions(body)
  return sorted(found & SIDE_EFFECT_OPS)


def check_saved_model(path, trust=False):
  """Raises unless `path` is a SavedModel whose graphs have no side effects.

  Args:
    path: the SavedModel folder.
    trust: skip the side-effect check (the user vouches for the file).

  Raises:
    ImgrecError: the folder is not a SavedModel, or it runs side-effect ops.
  """
  if not os.path.isfile(os.path.join(path, "saved_model.pb")):
    raise ImgrecError(f"{path} is not a SavedModel (no saved_model.pb).")
  if trust:
    return
  risky = side_effect_ops(path)
  if risky:
    raise ImgrecError(
        f"SavedModel {path} can run ops with side effects when loaded or "
        f"called ({', '.join(risky)}): it may read or write files or run "
        "code. imgrec's own exports never do. If you trust this file, pass "
        "--trust_model (trust_model=True in Python).")
