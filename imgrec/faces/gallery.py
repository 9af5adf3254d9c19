"""The enrolled people: a face gallery that users keep as one JSON file.

A gallery holds, for each person, the embeddings of their enrolled images
and where each came from, the model that made the embeddings (embeddings of
two models are not comparable) and, once calibrated, the decision threshold
with the false accept rate it was measured to give.

The file is JSON, never pickle, so that opening a gallery from someone else
cannot run code; everything in it is checked on loading (an object that
names one key twice, as a hand-merged file may, is damaged: json would keep
the last and drop the first), and it is written atomically, so a crash
mid-save leaves the previous gallery intact. Writers that may run at once
(two enrollments) go through `update`, which locks the file, reads what is
on disk and merges into it:

    {"format": "imgrec-face-gallery", "version": 1,
     "model": {"fingerprint": str, "embedding_dim": int, "name": str},
     "threshold": null or {"value", "far", "far_ci", "tar", "num_genuine",
                           "num_impostor", "calibrated_on"},
     "identities": {name: {"embeddings": [[float, ...], ...],
                           "sources": [str, ...],
                           "hashes": [str or null, ...]}}}

"hashes" (optional: galleries written before it have none) holds the
SHA-256 of each enrolled image's file bytes, so the same photo is never
enrolled twice; null where it is unknown. Identity names are text that
round-trips through a line of output (no line breaks or other control
characters), and the threshold is a cosine similarity, in [-1, 1].

Embedding values are saved with seven decimals: a score then moves by less
than 1e-6, far below any threshold's precision, and the file is half the
size.
"""

import collections
import contextlib
import json
import math
import os

import numpy as np

from imgrec import fileio
from imgrec.data import folder as folder_lib
from imgrec.errors import ImgrecError
from imgrec.metrics import verification as metrics

FORMAT = "imgrec-face-gallery"
VERSION = 1
MAX_FILE_BYTES = 512 * 1024 * 1024
# How far from length 1 an embedding may be (float32 rounding, saved digits).
NORM_TOLERANCE = 1e-3
_DECIMALS = 7
_KEYS = ("format", "version", "model", "threshold", "identities")
_MODEL_KEYS = ("fingerprint", "embedding_dim", "name")
_THRESHOLD_KEYS = ("value", "far", "far_ci", "tar", "num_genuine",
                   "num_impostor", "calibrated_on")
_IDENTITY_KEYS = ("embeddings", "sources")
_OPTIONAL_IDENTITY_KEYS = ("hashes",)
_ENROLL_HINT = "enroll the people again with imgrec-faces enroll"
_CALIBRATE_HINT = "run imgrec-faces calibrate first"
_NAMES_SHOWN = 10


class _Malformed(Exception):
  """What is wrong inside a gallery file; `load` names the file."""


def _is_int(value):
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def _require(condition, what):
  if not condition:
    raise _Malformed(what)


def _check_keys(mapping, keys, where, optional=()):
  _require(isinstance(mapping, dict), f"{where} is not an object")
  missing = [k for k in keys if k not in mapping]
  unknown = sorted(str(k) for k in mapping
                   if k not in keys and k not in optional)
  _require(not missing, f"{where} lacks {', '.join(missing)}")
  _require(not unknown, f"{where} has unknown keys {', '.join(unknown)}")


def _model_info(model_info, where="the model information", strict=False):
  """A copy of {fingerprint, embedding_dim, name}; raises _Malformed.

  Args:
    model_info: the dict to check.
    where: what it is, for the message.
    strict: refuse other keys too (in a file; a caller's dict may carry
      more about the model).
  """
  if strict:
    _check_keys(model_info, _MODEL_KEYS, where)
  _require(isinstance(model_info, dict), f"{where} is not an object")
  fingerprint = model_info.get("fingerprint")
  dim = model_info.get("embedding_dim")
  name = model_info.get("name")
  _require(isinstance(fingerprint, str) and fingerprint,
           f"{where} has no fingerprint")
  _require(_is_int(dim) and dim > 0,
           f"{where} has no positive integer embedding_dim")
  _require(isinstance(name, str), f"{where} has no name")
  return {"fingerprint": fingerprint, "embedding_dim": dim, "name": name}


def _checked_model_info(model_info):
  """`_model_info` for a caller's argument: raises ImgrecError."""
  try:
    return _model_info(model_info)
  except _Malformed as e:
    raise ImgrecError(
        f"The model information must be a dict with a fingerprint (str), an "
        f"embedding_dim (int) and a name (str), but {e}. Received: "
        f"model_info={model_info!r}") from None


def _unit_embeddings(values, dim, where):
  """`values` as a float64 array [n >= 1, dim] of finite unit vectors.

  Raises:
    _Malformed: saying what is wrong.
  """
  x = np.asarray(values, dtype=np.float64)
  if x.ndim == 1 and x.size == dim:
    x = x[None]
  _require(x.ndim == 2 and len(x), f"{where} has no embeddings")
  _require(x.shape[1] == dim, f"{where} has embeddings of {x.shape[1]} "
           f"values where the model gives {dim}")
  _require(np.all(np.isfinite(x)), f"{where} has NaN or infinite values")
  norms = np.linalg.norm(x, axis=1)
  worst = int(np.argmax(np.abs(norms - 1.0)))
  _require(abs(norms[worst] - 1.0) <= NORM_TOLERANCE,
           f"{where} has an embedding of length {norms[worst]:.4f} (number "
           f"{worst + 1}) where unit length is expected")
  return x


def _parse_embeddings(rows, dim, where):
  """JSON rows of numbers -> array; raises _Malformed on any other type."""
  _require(isinstance(rows, list) and rows, f"{where} has no embeddings")
  for i, row in enumerate(rows):
    _require(isinstance(row, list) and len(row) == dim,
             f"embedding {i + 1} of {where} is not a list of {dim} numbers")
    # bool is an int to Python; true/false in a file is not an embedding.
    _require(all(type(v) in (int, float) for v in row),
             f"embedding {i + 1} of {where} holds something other than "
             f"numbers")
  try:
    return _unit_embeddings(rows, dim, where)
  except OverflowError:
    raise _Malformed(
        f"{where} has a number too large for an embedding") from None


def _parse_threshold(value):
  if value is None:
    return None
  _check_keys(value, _THRESHOLD_KEYS, "the threshold")
  for key in ("value", "far", "tar"):
    _require(_is_number(value[key]), f"the threshold's {key} is not a number")
  # Scores are cosines: a threshold outside [-1, 1] accepts everyone or
  # no one, whatever the faces.
  _require(-1.0 <= value["value"] <= 1.0,
           f"the threshold's value {value['value']!r} is not a cosine "
           f"similarity (between -1 and 1)")
  for key in ("far", "tar"):
    _require(0.0 <= value[key] <= 1.0,
             f"the threshold's {key} is not between 0 and 1")
  ci = value["far_ci"]
  _require(isinstance(ci, list) and len(ci) == 2
           and all(_is_number(v) for v in ci)
           and 0.0 <= ci[0] <= ci[1] <= 1.0,
           "the threshold's far_ci is not a pair of rates, low to high")
  for key in ("num_genuine", "num_impostor"):
    _require(_is_int(value[key]) and value[key] >= 0,
             f"the threshold's {key} is not a count")
  _require(value["calibrated_on"] is None
           or isinstance(value["calibrated_on"], str),
           "the threshold's calibrated_on is not text")
  return {key: (list(value[key]) if key == "far_ci" else value[key])
          for key in _THRESHOLD_KEYS}


def _parse(data):
  """A loaded JSON value -> (model, threshold, identities); _Malformed."""
  _check_keys(data, _KEYS, "the top level")
  model = _model_info(data["model"], "the model entry", strict=True)
  threshold = _parse_threshold(data["threshold"])
  identities = data["identities"]
  _require(isinstance(identities, dict), "the identities are not an object")
  out = {}
  for name, entry in identities.items():
    where = f"identity {name!r}"
    problem = _name_problem(name)
    _require(problem is None, f"{where} {problem}")
    _check_keys(entry, _IDENTITY_KEYS, where, _OPTIONAL_IDENTITY_KEYS)
    embeddings = _parse_embeddings(entry["embeddings"],
                                   model["embedding_dim"], where)
    sources = entry["sources"]
    _require(isinstance(sources, list)
             and all(isinstance(s, str) for s in sources),
             f"the sources of {where} are not a list of text")
    _require(len(sources) == len(embeddings),
             f"{where} has {len(embeddings)} embeddings but {len(sources)} "
             f"sources")
    hashes = entry.get("hashes", [None] * len(sources))
    _require(isinstance(hashes, list) and len(hashes) == len(sources)
             and all(h is None or isinstance(h, str) for h in hashes),
             f"the hashes of {where} are not one text (or null) per "
             f"embedding")
    out[name] = {"embeddings": embeddings, "sources": list(sources),
                 "hashes": list(hashes)}
  return model, threshold, out


def _name_problem(name):
  """Why `name` cannot be an identity's name, or None when it can.

  The rule is the one class names follow (`folder.check_class_names`): a
  name is printed on one line of output, so it must not be blank or hold a
  line break or another control character.
  """
  if not isinstance(name, str):
    return "has a name that is not text"
  try:
    folder_lib.check_class_names([name], "")
  except ImgrecError:
    return ("has a name that is blank or holds a line break or another "
            "control character")
  return None


def check_name(name):
  """Refuses a name a person cannot be enrolled under.

  Raises:
    ImgrecError: the name is not text, is blank, or holds a line break or
      another control character (one line of output could not show it).
  """
  problem = _name_problem(name)
  if problem is not None:
    raise ImgrecError(f"A person to enroll {problem}, which one line of "
                      f"output cannot show; give another name. Received: "
                      f"name={name!r}")


def _unique_pairs(pairs):
  """json's object_pairs_hook: a dict, refusing a key given twice."""
  out = {}
  for key, value in pairs:
    if key in out:
      raise _Malformed(f"the key {key!r} appears twice in one object (json "
                       f"would keep only the last)")
    out[key] = value
  return out


def _refuse_constant(name):
  raise _Malformed(f"it holds {name}, which is not a number")


def _read_json(path):
  """The JSON value in `path`; ImgrecError naming the file on any failure."""
  try:
    size = os.path.getsize(path)
  except FileNotFoundError:
    raise ImgrecError(
        f"There is no face gallery at {path}; check the path, or create one "
        f"with imgrec-faces enroll.") from None
  except OSError as e:
    raise ImgrecError(f"Cannot read the face gallery {path} ({e.strerror}); "
                      f"check the path and its permissions.") from None
  _check_regular(path)
  if size > MAX_FILE_BYTES:
    raise ImgrecError(
        f"The face gallery {path} is {size / 2**20:.0f} MB, more than the "
        f"{MAX_FILE_BYTES // 2**20} MB a gallery may have; check that it is "
        f"the right file, or split the people over several galleries.")
  try:
    with open(path, "rb") as f:
      return json.loads(f.read(), parse_constant=_refuse_constant,
                        object_pairs_hook=_unique_pairs)
  except _Malformed as e:
    raise ImgrecError(f"The face gallery {path} is damaged: {e}; restore it "
                      f"from a backup or {_ENROLL_HINT}.") from None
  except (ValueError, RecursionError) as e:
    # json and UTF-8 decoding errors are ValueErrors.
    raise ImgrecError(
        f"{path} is not a face gallery: it is not valid JSON "
        f"({type(e).__name__}); check the path, or restore the file from a "
        f"backup.") from None
  except OSError as e:
    raise ImgrecError(f"Cannot read the face gallery {path} ({e.strerror}); "
                      f"check the path and its permissions.") from None


def _check_regular(path):
  """Refuses a gallery path that is a folder, a FIFO or a device.

  A gallery is read, merged and replaced: a FIFO would block the read and
  a device has nothing to merge with, so only a regular file (or a link to
  one) is a gallery.
  """
  if os.path.isdir(path):
    raise ImgrecError(f"The face gallery {path} is a folder, not a file; "
                      f"give the path of the gallery's .json file.")
  if fileio.is_special(path):
    raise ImgrecError(f"The face gallery {path} is not a regular file (a "
                      f"FIFO, device or socket); give the path of the "
                      f"gallery's .json file.")


def check_path(path):
  """Refuses, before any slow work, a gallery path that cannot be written.

  Raises:
    ImgrecError: `path` is a folder, a FIFO or a device.
  """
  _check_regular(os.fspath(path))


def _plain(value):
  """A numpy scalar as the Python number it holds; anything else as is."""
  return value.item() if isinstance(value, np.generic) else value


def _names_hint(names):
  shown = ", ".join(repr(n) for n in names[:_NAMES_SHOWN])
  more = len(names) - _NAMES_SHOWN
  return shown + (f" and {more} more" if more > 0 else "") if names else (
      "nobody")


class Gallery:
  """The enrolled people of one embedding model, and its decision threshold.

  Create one with `Gallery.new(model_info)` or `Gallery.load(path)`; add
  people with `enroll`, save with `save`. `identify` ranks the enrolled
  people for each probe embedding; `decide` says whether a score is a match,
  once `set_threshold` has stored a calibrated threshold.
  """

  def __init__(self, model, threshold=None, identities=None):
    """Use `Gallery.new` or `Gallery.load`; the arguments are not checked."""
    self._model = dict(model)
    self._threshold = threshold
    self._identities = identities if identities is not None else {}
    self._holders = None  # {hash or ("source", path): name}, built on use.

  @classmethod
  def new(cls, model_info):
    """An empty gallery for embeddings of one model.

    Args:
      model_info: dict with fingerprint (str: identifies the weights),
        embedding_dim (int) and name (str: for people).

    Raises:
      ImgrecError: if `model_info` lacks one of them.
    """
    return cls(_checked_model_info(model_info))

  @classmethod
  def load(cls, path):
    """Reads and checks a gallery file.

    Args:
      path: the gallery's JSON file.

    Returns:
      The Gallery.

    Raises:
      ImgrecError: naming the file, if it is missing, larger than
        MAX_FILE_BYTES, not JSON, not a face gallery, of a newer version
        than this imgrec reads, or malformed (wrong types, embeddings of the
        wrong length, NaN or infinite values, vectors not of unit length).
    """
    path = os.fspath(path)
    data = _read_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
      raise ImgrecError(
          f"{path} is not an imgrec face gallery (its \"format\" is not "
          f"{FORMAT!r}); check the path.")
    version = data.get("version")
    if _is_int(version) and version > VERSION:
      raise ImgrecError(
          f"The face gallery {path} has version {version}, newer than the "
          f"version {VERSION} this imgrec reads; upgrade imgrec to use it.")
    try:
      _require(version == VERSION and _is_int(version),
               f"its version {version!r} is not {VERSION}")
      model, threshold, identities = _parse(data)
    except _Malformed as e:
      raise ImgrecError(f"The face gallery {path} is damaged: {e}; restore it "
                        f"from a backup or {_ENROLL_HINT}.") from None
    return cls(model, threshold, identities)

  def to_json(self):
    """The gallery as the JSON-serializable dict that `save` writes."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": dict(self._model),
        "threshold": (None if self._threshold is None
                      else dict(self._threshold)),
        "identities": {
            name: {"embeddings": np.round(entry["embeddings"],
                                          _DECIMALS).tolist(),
                   "sources": list(entry["sources"]),
                   "hashes": list(entry["hashes"])}
            for name, entry in self._identities.items()},
    }

  def save(self, path):
    """Writes the gallery to `path` atomically (the old file stays whole
    until the new one is complete)."""
    fileio.write_json(os.fspath(path), self.to_json(), allow_nan=False)

  @property
  def model(self):
    """The model that made the embeddings: {fingerprint, embedding_dim,
    name}."""
    return dict(self._model)

  @property
  def threshold(self):
    """The calibrated threshold (see the module docstring), or None."""
    return None if self._threshold is None else dict(self._threshold)

  @property
  def names(self):
    """The enrolled people, in the order of enrollment."""
    return list(self._identities)

  def __len__(self):
    return len(self._identities)

  def __contains__(self, name):
    return name in self._identities

  def sources(self, name):
    """Where the embeddings of one person came from (image paths)."""
    return list(self._entry(name)["sources"])

  def embeddings(self, name):
    """The enrolled embeddings of one person: float64 array [n, D]."""
    return self._entry(name)["embeddings"].copy()

  def _entry(self, name):
    try:
      return self._identities[name]
    except KeyError:
      raise ImgrecError(
          f"There is no one named {name!r} in this gallery; the people "
          f"enrolled are {_names_hint(self.names)}.") from None

  def check_model(self, model_info):
    """Refuses embeddings of a model other than the gallery's.

    Raises:
      ImgrecError: naming both models, when the fingerprints differ.
    """
    other = _checked_model_info(model_info)
    mine = self._model
    if other["fingerprint"] != mine["fingerprint"]:
      raise ImgrecError(
          f"This gallery was made with the model {mine['name']!r} "
          f"(fingerprint {mine['fingerprint']}), not with "
          f"{other['name']!r} (fingerprint {other['fingerprint']}), and "
          f"their embeddings cannot be compared; {_ENROLL_HINT} and this "
          f"model into a new gallery, or use the gallery's model.")
    if other["embedding_dim"] != mine["embedding_dim"]:
      raise ImgrecError(
          f"The model {other['name']!r} gives embeddings of "
          f"{other['embedding_dim']} values but this gallery holds "
          f"{mine['embedding_dim']} under the same fingerprint; {_ENROLL_HINT}"
          f" into a new gallery.")

  def holder(self, content_hash, source=None):
    """Who already has this image enrolled, or None.

    Args:
      content_hash: the SHA-256 (hex) of the image's file bytes, or None.
      source: the image's path, matched against embeddings enrolled without
        a hash (galleries written before hashes were kept).

    Returns:
      The name of the person holding an embedding of that content.
    """
    if self._holders is None:
      self._holders = {}
      for name, entry in self._identities.items():
        for known, known_source in zip(entry["hashes"], entry["sources"]):
          key = ("source", known_source) if known is None else known
          self._holders.setdefault(key, name)
    found = self._holders.get(content_hash) if content_hash else None
    if found is None and source is not None:
      found = self._holders.get(("source", source))
    return found

  def enroll(self, name, embeddings, sources, model_info, hashes=None):
    """Adds a person, or more images of one already enrolled.

    Args:
      name: the person's name: not blank, no line breaks or other control
        characters (it is printed on one line).
      embeddings: float array [n, D] of L2-normalized embeddings; they are
        checked, not re-normalized.
      sources: n strings, where each embedding came from (image paths).
      model_info: the model that made the embeddings (see `new`).
      hashes: n SHA-256 hex digests of the images' file bytes (None where
        unknown), so that `holder` finds them again; None: all unknown.

    Returns:
      How many embeddings the person now has.

    Raises:
      ImgrecError: for another model, a name that cannot be printed on one
        line, no embeddings, a count of sources or hashes that differs,
        embeddings of the wrong size, not finite or not of unit length, or
        an image (by hash) already enrolled: `holder` tells which are.
    """
    self.check_model(model_info)
    check_name(name)
    try:
      embeddings = _unit_embeddings(embeddings,
                                    self._model["embedding_dim"],
                                    f"the enrollment of {name!r}")
    except _Malformed as e:
      raise ImgrecError(f"Cannot enroll {name!r}: {e}; give embeddings "
                        f"straight from the gallery's model.") from None
    sources = [str(s) for s in sources]
    if len(sources) != len(embeddings):
      raise ImgrecError(
          f"Cannot enroll {name!r}: {len(embeddings)} embeddings but "
          f"{len(sources)} sources; give one source per embedding.")
    hashes = [None] * len(sources) if hashes is None else list(hashes)
    if len(hashes) != len(sources) or not all(
        h is None or isinstance(h, str) for h in hashes):
      raise ImgrecError(
          f"Cannot enroll {name!r}: give one hash (str or None) per "
          f"embedding. Received: {len(hashes)} hashes for {len(sources)} "
          f"embeddings")
    repeats = collections.Counter(h for h in hashes if h is not None)
    for h, source in zip(hashes, sources):
      holder = self.holder(h, source) if h is not None else None
      if holder is not None or repeats[h] > 1:
        raise ImgrecError(
            f"Cannot enroll {name!r}: {source} is already enrolled as "
            f"{holder or name!r} (the same image bytes); leave it out "
            f"(Gallery.holder finds such images).")
    entry = self._identities.setdefault(
        name, {"embeddings": np.zeros((0, embeddings.shape[1])),
               "sources": [], "hashes": []})
    entry["embeddings"] = np.concatenate([entry["embeddings"], embeddings])
    entry["sources"] = entry["sources"] + sources
    entry["hashes"] = entry["hashes"] + hashes
    self._holders = None
    return len(entry["sources"])

  def remove(self, name):
    """Removes a person from the gallery.

    Raises:
      ImgrecError: if nobody of that name is enrolled.
    """
    self._entry(name)
    del self._identities[name]
    self._holders = None

  def templates(self):
    """One template per person: the mean embedding, re-normalized.

    Returns:
      (names, templates): the names in `names` order and a float64 array
      [len(names), D].
    """
    names = self.names
    if not names:
      return [], np.zeros((0, self._model["embedding_dim"]))
    stacked = np.concatenate(
        [self._identities[n]["embeddings"] for n in names])
    labels = np.repeat(np.arange(len(names)),
                       [len(self._identities[n]["sources"]) for n in names])
    _, templates = metrics.identity_templates(stacked, labels)
    return names, templates

  def identify(self, embeddings, top_k=5, model_info=None,
               matching="nearest"):
    """Ranks the enrolled people for each probe embedding.

    Scores are cosine similarities to each person's nearest enrolled image
    (or template: `metrics.person_scores`). Ranking makes no decision:
    whether the best score is a match is `decide`'s answer.

    Args:
      embeddings: float array [m, D] of L2-normalized probe embeddings (or
        one vector [D]).
      top_k: how many people to list per probe (at most all).
      model_info: the model that made the probes; checked when given.
      matching: "nearest" or "template".

    Returns:
      For each probe, a list of (name, score) pairs, best first.

    Raises:
      ImgrecError: with nobody enrolled, for another model, or for probes of
        the wrong size, not finite or not of unit length.
    """
    if model_info is not None:
      self.check_model(model_info)
    if not self._identities:
      raise ImgrecError("This gallery has nobody enrolled, so there is "
                        "nobody to identify; enroll people with imgrec-faces "
                        "enroll first.")
    try:
      probes = _unit_embeddings(embeddings, self._model["embedding_dim"],
                                "the probes")
    except _Malformed as e:
      raise ImgrecError(f"Cannot identify: {e}; give embeddings straight "
                        f"from the gallery's model.") from None
    names = self.names
    gallery = np.concatenate([self.embeddings(n) for n in names])
    labels = np.concatenate([[i] * len(self.embeddings(n))
                             for i, n in enumerate(names)])
    _, scores = metrics.person_scores(probes, gallery, labels, matching)
    keep = max(1, min(int(top_k), len(names)))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :keep]
    return [[(names[j], float(row[j])) for j in ranked]
            for row, ranked in zip(scores, order)]

  def set_threshold(self, calibration, calibrated_on=None):
    """Stores the decision threshold, or clears it with None.

    Args:
      calibration: a dict from `metrics.calibrate_threshold` (threshold,
        far, far_ci, tar, num_genuine, num_impostor), or None.
      calibrated_on: what it was measured on (a folder); defaults to
        calibration["calibrated_on"] when there is one.

    Raises:
      ImgrecError: if a value is missing or of the wrong type.
    """
    if calibration is None:
      self._threshold = None
      return
    if calibrated_on is None:
      calibrated_on = calibration.get("calibrated_on")
    value = {"value": calibration.get("threshold"),
             "far": calibration.get("far"),
             "far_ci": list(calibration.get("far_ci") or []),
             "tar": calibration.get("tar"),
             "num_genuine": calibration.get("num_genuine"),
             "num_impostor": calibration.get("num_impostor"),
             "calibrated_on": (None if calibrated_on is None
                               else str(calibrated_on))}
    # numpy scalars (np.float32, np.int64) are numbers too.
    value = {key: ([_plain(v) for v in item] if key == "far_ci"
                   else _plain(item)) for key, item in value.items()}
    try:
      self._threshold = _parse_threshold(value)
    except _Malformed as e:
      raise ImgrecError(
          f"Cannot set the gallery's threshold: {e}; pass the result of "
          f"imgrec.metrics.verification.calibrate_threshold.") from None

  def decide(self, score):
    """Whether a score is a match: at least the calibrated threshold.

    Raises:
      ImgrecError: if no threshold is set.
    """
    if self._threshold is None:
      raise ImgrecError(
          f"This gallery has no decision threshold, so a score cannot be "
          f"called a match or not; {_CALIBRATE_HINT}.")
    return bool(float(score) >= self._threshold["value"])


@contextlib.contextmanager
def update(path, model_info):
  """Locks a gallery file and yields it as it is on disk, then saves it.

  Two processes enrolling into one gallery at once take turns here, and
  each merges into what the other wrote (a load at the start of a long
  enrollment and a save at its end would drop the other's people). Do the
  slow work (embedding photos) before; only the merge belongs inside.

  Args:
    path: the gallery file; created (with its folder) when absent, written
      through when it is a symlink.
    model_info: the model whose embeddings are merged in (see
      `Gallery.new`).

  Yields:
    The Gallery read under the lock (a new one when there is no file).
    It is saved when the block ends; when the block raises, nothing is
    written.

  Raises:
    ImgrecError: `path` is a folder, FIFO or device, the file is damaged (it
      is then left as it is, never replaced), or it holds another model's
      embeddings.
  """
  path = os.fspath(path)
  check_path(path)
  with fileio.locked(path):
    gallery = (Gallery.load(path) if os.path.exists(path)
               else Gallery.new(model_info))
    gallery.check_model(model_info)
    yield gallery
    gallery.save(path)
