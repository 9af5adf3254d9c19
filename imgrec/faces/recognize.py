"""Enroll, identify, verify, calibrate and evaluate with a trained face embedder.

Every command reads photos through `detect.load_faces` (detection and
alignment, or the whole photo of pre-cropped faces), so a photo with no
face, several faces or broken bytes is reported on its own line and the
others go on.

Commands that write the gallery (enroll, calibrate) do their slow work
first and then merge into the gallery as it is on disk, under a lock
(`gallery.update`), so two of them at once both land. Identify and verify
decide at the gallery's calibrated threshold, else at the embedder's
validation EER threshold, and say which decided.
"""

import hashlib
import logging
import os

import numpy as np

from imgrec import fileio
from imgrec.config import FaceCalibrateConfig
from imgrec.config import FaceEnrollConfig
from imgrec.config import FaceEvaluateConfig
from imgrec.config import FaceIdentifyConfig
from imgrec.config import FaceVerifyConfig
from imgrec.data import faces as faces_lib
from imgrec.data import folder as folder_lib
from imgrec.errors import ImgrecError
from imgrec.faces import gallery as gallery_lib
from imgrec.faces.embedder import Embedder
from imgrec.inference import face_detect_lite
from imgrec.metrics import verification as metrics
from imgrec.run_folder import RunFolder

GALLERY_CALIBRATION = "gallery calibration"
EMBEDDER_EER = "embedder validation EER"
logger = logging.getLogger("imgrec")
_HASH_BLOCK = 1 << 20


class Recognizer:
  """An embedder plus how photos become face crops.

  Args:
    config: a validated FacePhotosConfig (model_dir, runtime, detect,
      several, flip, max_image_pixels): any face command's record.
  """

  def __init__(self, config):
    self.config = config
    self.embedder = Embedder.load(config.model_dir, config.runtime)
    self._detector = None

  def faces(self, paths):
    """(FaceResults in order, embeddings [n ok, D] of the ok ones)."""
    if self.config.detect and self._detector is None:
      self._detector = face_detector(self.config)
    results = faces_lib.load_faces(
        list(paths), self.embedder.image_size, detect=self.config.detect,
        detector=self._detector, several=self.config.several,
        margin=float(self.embedder.info.get("crop_margin", 0.2)),
        max_pixels=self.config.max_image_pixels)
    ok = [r.face for r in results if r.status == "ok"]
    size = self.embedder.image_size
    faces = np.stack(ok) if ok else np.zeros((0, size, size, 3), np.uint8)
    return results, self.embedder.embed(faces, flip=self.config.flip)


def face_detector(config):
  """The face detector of a command's run: MTCNN on LiteRT for
  `--runtime=tflite` (the files `imgrec-faces export` writes beside the
  TFLite embedder, no TensorFlow), the Keras MTCNN otherwise. Both find
  the same faces (tests/test_face_detect_lite.py).

  An export made before the detector files were written still works: it
  detects with the Keras MTCNN, after one line saying how to do without.
  """
  if config.runtime == "tflite":
    export_dir = RunFolder(config.model_dir).export_dir
    if face_detect_lite.has_detector(export_dir):
      return face_detect_lite.LiteFaceDetector(export_dir)
    logger.warning(
        "%s holds no face detector files: detecting with the Keras MTCNN "
        "(TensorFlow). Run imgrec-faces export --model_dir=%s again to "
        "detect on LiteRT.", export_dir, config.model_dir)
  return faces_lib.FaceDetector()


def _same_file(a, b):
  try:
    return os.path.samefile(a, b)
  except (OSError, ValueError):
    return False


def image_files(sources, exclude=None):
  """Image files of files and folders (a folder: its images, sorted).

  Args:
    sources: files and folders.
    exclude: a file left out of folder listings (the gallery kept in the
      folder of the photos).
  """
  out = []
  for source in sources:
    if os.path.isdir(source):
      found = [os.path.join(source, n) for n in os.listdir(source)
               if not n.startswith(".") and os.path.isfile(
                   os.path.join(source, n))]
      if exclude:
        found = [f for f in found if not _same_file(f, exclude)]
      out += sorted(found, key=folder_lib.natural_key)
    elif os.path.exists(source):
      out.append(source)
    else:
      raise ImgrecError(f"{source} does not exist: pass image files or "
                        "folders of a person's images.")
  return out


def content_hash(path):
  """SHA-256 (hex) of a regular file's bytes; None when it cannot be read."""
  if not os.path.isfile(path):
    return None  # A FIFO would block; load_faces reports it.
  digest = hashlib.sha256()
  try:
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(_HASH_BLOCK), b""):
        digest.update(block)
  except OSError:
    return None
  return digest.hexdigest()


def _people(config, sources):
  """{name: [image paths]} of enroll's sources, names checked."""
  people, folders = {}, {}
  for source in sources:
    if config.name:
      name = config.name
    elif os.path.isdir(source):
      name = os.path.basename(os.path.abspath(source))
      real = os.path.realpath(source)
      earlier = folders.setdefault(name, (source, real))
      if earlier[1] != real:
        raise ImgrecError(
            f"The folders {earlier[0]} and {source} are both named {name!r}: "
            f"enrolled together they would become one person. Enroll them "
            f"one at a time with --name=PERSON, or rename one.")
    else:
      raise ImgrecError(f"{source} is a file: say whose face it is with "
                        "--name=PERSON.")
    gallery_lib.check_name(name)
    people.setdefault(name, []).extend(
        image_files([source], exclude=config.gallery))
  return people


def _new_photos(paths, gallery, seen, name):
  """(fresh [(path, hash)], duplicates [(path, holder)]) of one person."""
  fresh, duplicates = [], []
  for path in paths:
    digest = content_hash(path)
    holder = gallery.holder(digest, path) or (seen.get(digest) if digest
                                              else None)
    if holder is not None:
      duplicates.append((path, holder))
    else:
      if digest:
        seen[digest] = name
      fresh.append((path, digest))
  return fresh, duplicates


def enroll(config, sources):
  """Adds people to the gallery: each folder is one person (its name, or
  --name for a single source); a file source needs --name.

  Args:
    config: a FaceEnrollConfig, or a dict of its fields.
    sources: folders of a person's photos, or photo files with --name.

  A photo already in the gallery (the same file bytes, under any name) is
  not enrolled again. The photos are embedded first; then the gallery is
  locked, read as it is on disk (another enrollment may have written it
  meanwhile), merged into and saved.

  Returns:
    (gallery, [{"person", "enrolled", "duplicates": [(path, holder)],
    "skipped": [(path, status, message)]}]).

  Raises:
    ImgrecError: bad sources or names, a gallery path that is a folder,
      FIFO, device or one of the photos, a damaged gallery (left as it is)
      or another model's, or nobody enrolled and nothing already there
      (then the gallery is not written).
  """
  config = FaceEnrollConfig.coerce(config, "enroll").validate()
  if not sources:
    raise ImgrecError("Pass the photos to enroll: a folder per person, or "
                      "image files with --name.")
  gallery_lib.check_path(config.gallery)
  fileio.check_output(config.gallery, flag="--gallery", inputs=sources,
                      overwrite=True)
  people = _people(config, sources)
  recognizer = Recognizer(config)
  info = recognizer.embedder.model_info
  # A damaged gallery or another model's fails here, before the slow work.
  before = (gallery_lib.Gallery.load(config.gallery)
            if os.path.exists(config.gallery)
            else gallery_lib.Gallery.new(info))
  before.check_model(info)
  batches, seen, every = [], {}, []
  for name, paths in people.items():
    fresh, duplicates = _new_photos(paths, before, seen, name)
    results, embeddings = recognizer.faces([p for p, _ in fresh])
    every += results
    batches.append((name, fresh, results, embeddings, duplicates))
  if not any(r.ok for r in every):
    if not any(b[4] for b in batches):
      raise ImgrecError(
          f"Nobody was enrolled, and {config.gallery} is left as it was: "
          f"{faces_lib.summary_line(every) if every else 'no image files'}"
          f". Pass photos of one face each (--detect=false for pictures that"
          f" already are face crops).")
    return before, _summary(batches, [[] for _ in batches])
  kept = []
  with gallery_lib.update(config.gallery, info) as gallery:
    for name, fresh, results, embeddings, duplicates in batches:
      ok = [(path, digest) for (path, digest), r in zip(fresh, results)
            if r.ok]
      # Another enrollment may have put the same photos in meanwhile.
      keep = []
      for i, (path, digest) in enumerate(ok):
        holder = gallery.holder(digest, path)
        if holder is None:
          keep.append(i)
        else:
          duplicates.append((path, holder))
      if keep:
        gallery.enroll(name, embeddings[keep], [ok[i][0] for i in keep],
                       info, [ok[i][1] for i in keep])
      kept.append(keep)
  return gallery, _summary(batches, kept)


def _summary(batches, kept):
  return [{"person": name, "enrolled": len(keep),
           "duplicates": list(duplicates),
           "skipped": [(r.path, r.status, r.message) for r in results
                       if not r.ok]}
          for (name, _, results, _, duplicates), keep in zip(batches, kept)]


def decision_threshold(embedder, gallery=None):
  """The threshold identify and verify decide at, and where it comes from.

  The gallery's calibrated threshold when it has one (chosen for a false
  accept rate), else the embedder's: the EER threshold on its held-out
  validation people. Without either there is no decision to make.

  Returns:
    (threshold, source): source is GALLERY_CALIBRATION or EMBEDDER_EER.

  Raises:
    ImgrecError: neither has a threshold.
  """
  if gallery is not None and gallery.threshold is not None:
    return float(gallery.threshold["value"]), GALLERY_CALIBRATION
  value = embedder.info.get("eer_threshold")
  if value is None:
    raise ImgrecError(
        "No decision threshold: the gallery is not calibrated and the "
        "embedder has none of its own (it was trained without held-out "
        "people). Run imgrec-faces calibrate --gallery=G.json "
        "--data_dir=PEOPLE, then pass --gallery=G.json.")
  if (isinstance(value, bool) or not isinstance(value, (int, float))
      or not -1.0 <= value <= 1.0):
    raise ImgrecError(
        f"The embedder's eer_threshold {value!r} is not a cosine similarity "
        f"(between -1 and 1): its embedder info is damaged. Calibrate a "
        f"gallery (imgrec-faces calibrate) and pass it with --gallery.")
  return float(value), EMBEDDER_EER


def identify(config, sources):
  """One dict per photo: {"source", "identity", "score", "rank",
  "threshold", "threshold_source"} (identity "unknown" below the
  threshold: see `decision_threshold`), or {"source", "error"}.

  Args:
    config: a FaceIdentifyConfig, or a dict of its fields.
    sources: photo files and folders of photos.

  Raises:
    ImgrecError: no gallery, a damaged one, nobody enrolled, no threshold,
      or no image files in `sources`.
  """
  config = FaceIdentifyConfig.coerce(config, "identify").validate()
  gallery = gallery_lib.Gallery.load(config.gallery)
  if not len(gallery):
    raise ImgrecError(f"{config.gallery} has nobody enrolled: run "
                      "imgrec-faces enroll first.")
  recognizer = Recognizer(config)
  gallery.check_model(recognizer.embedder.model_info)
  threshold, source = decision_threshold(recognizer.embedder, gallery)
  paths = image_files(sources)
  if not paths:
    raise ImgrecError("No photos to identify: pass image files or folders "
                      "of them.")
  results, embeddings = recognizer.faces(paths)
  ranked = iter(gallery.identify(embeddings, top_k=config.top_k)
                if len(embeddings) else [])
  out = []
  for r in results:
    if r.status != "ok":
      out.append({"source": r.path, "error": f"{r.status}: {r.message}"})
      continue
    rank = next(ranked)
    best_name, best_score = rank[0]
    out.append({"source": r.path,
                "identity": best_name if best_score >= threshold
                            else "unknown",
                "score": float(best_score),
                "rank": [[n, float(s)] for n, s in rank],
                "threshold": threshold, "threshold_source": source})
  return out


def verify(config, path_a, path_b):
  """{"a", "b", "score", "same", "threshold", "threshold_source"}: one
  score and the decision at `decision_threshold` (of --gallery when
  given). `config`: a FaceVerifyConfig, or a dict of its fields."""
  config = FaceVerifyConfig.coerce(config, "verify").validate()
  gallery = (gallery_lib.Gallery.load(config.gallery) if config.gallery
             else None)
  recognizer = Recognizer(config)
  if gallery is not None:
    gallery.check_model(recognizer.embedder.model_info)
  threshold, source = decision_threshold(recognizer.embedder, gallery)
  results, embeddings = recognizer.faces([path_a, path_b])
  for r in results:
    if r.status != "ok":
      raise ImgrecError(f"{r.path}: {r.status}: {r.message}")
  score = float(embeddings[0] @ embeddings[1])
  return {"a": path_a, "b": path_b, "score": score,
          "same": bool(score >= threshold), "threshold": threshold,
          "threshold_source": source}


def _labelled_faces(recognizer, data_dir):
  """(people, embeddings, labels, paths, skipped) of identity folders."""
  found = folder_lib.find_images(data_dir, min_classes=2, carve=False)
  paths, labels = [], []
  for split in found.splits.values():
    paths += split.paths
    labels += split.labels
  order = sorted(range(len(paths)),
                 key=lambda i: (labels[i],
                                folder_lib.natural_key(paths[i])))
  paths = [paths[i] for i in order]
  labels = [labels[i] for i in order]
  results, embeddings = recognizer.faces(paths)
  ok = [i for i, r in enumerate(results) if r.status == "ok"]
  skipped = [(r.path, r.status, r.message) for r in results
             if r.status != "ok"]
  return (list(found.class_names), embeddings, np.array(labels)[ok],
          [paths[i] for i in ok], skipped)


def calibrate(config):
  """Chooses the gallery's threshold on the genuine/impostor pairs of
  --data_dir for --target_far; stores it in the gallery (made if absent).

  Returns:
    `metrics.calibrate_threshold`'s dict plus calibrated_on, skipped (how
    many photos gave no face) and warning: None, or one line saying that
    the impostor pairs were too few to show the target FAR (the 95%
    interval reaches past it even with no false accept) with the interval
    and how many pairs it takes.

  A threshold that has not shown its target is stored all the same: it
  accepts none (or the target's share) of the impostor pairs seen, so it is
  the strictest these people support, and without it identify and verify
  fall back on the embedder's EER threshold, which accepts far more
  strangers. The interval and the pair count are stored with it.

  Args:
    config: a FaceCalibrateConfig, or a dict of its fields.
  """
  config = FaceCalibrateConfig.coerce(config, "calibrate").validate()
  gallery_lib.check_path(config.gallery)
  recognizer = Recognizer(config)
  info = recognizer.embedder.model_info
  if os.path.exists(config.gallery):  # Damaged or another model's: now.
    gallery_lib.Gallery.load(config.gallery).check_model(info)
  _, embeddings, labels, paths, skipped = _labelled_faces(recognizer,
                                                          config.data_dir)
  fileio.check_output(config.gallery, flag="--gallery",
                      inputs=paths + [p for p, _, _ in skipped],
                      overwrite=True)
  genuine, impostor = metrics.pair_scores(embeddings, labels)
  calibration = metrics.calibrate_threshold(genuine, impostor,
                                            config.target_far)
  calibration["calibrated_on"] = os.path.abspath(config.data_dir)
  with gallery_lib.update(config.gallery, info) as gallery:
    gallery.set_threshold(calibration)
  calibration["skipped"] = len(skipped)
  calibration["warning"] = None if calibration["enough_pairs"] else (
      f"the false accept rate of this threshold is only known to lie within "
      f"{calibration['far_ci'][0]:.5f}-{calibration['far_ci'][1]:.5f} (95% "
      f"interval, {calibration['num_impostor']} impostor pairs), not below "
      f"--target_far={config.target_far:g}; showing that takes at least "
      f"{calibration['pairs_needed']} impostor pairs (about 3.7/target_far, "
      f"the rule of three): add people or photos to --data_dir")
  return calibration


def _split_enrolled(labels, count):
  """Indices of the first `count` images of each person, and the rest."""
  enrolled, probes, seen = [], [], {}
  for i, label in enumerate(labels):
    seen[label] = seen.get(label, 0) + 1
    (enrolled if seen[label] <= count else probes).append(i)
  return np.array(enrolled, int), np.array(probes, int)


def evaluate(config, write=True):
  """Verification and identification figures on unseen people.

  Returns the report: {"eer", "rank1", "tar_at_far", "verification",
  "identification": {"enroll_<k>": ...}, "open_set", "skipped"}; with
  `write`, face_report.json and roc.png in the model_dir.

  Args:
    config: a FaceEvaluateConfig, or a dict of its fields.
    write: write the report into the model_dir.
  """
  config = FaceEvaluateConfig.coerce(config, "evaluate").validate()
  recognizer = Recognizer(config)
  people, embeddings, labels, _, skipped = _labelled_faces(
      recognizer, config.data_dir)
  verification = metrics.verification_report(embeddings, labels)
  identification = {}
  for count in sorted({config.enroll_images, 1}):
    enrolled, probes = _split_enrolled(labels, count)
    if len(probes):
      identification[f"enroll_{count}"] = metrics.identification_report(
          embeddings[enrolled], labels[enrolled], embeddings[probes],
          labels[probes])
  # Open set: the first half of the people enrolled, the others unknown.
  known = set(sorted(set(labels.tolist()))[:max(1, len(people) // 2)])
  enrolled, probes = _split_enrolled(labels, config.enroll_images)
  enrolled = np.array([i for i in enrolled if labels[i] in known], int)
  open_set = (metrics.open_set_report(embeddings[enrolled], labels[enrolled],
                                      embeddings[probes], labels[probes])
              if len(enrolled) and len(probes) else None)
  main = identification.get(f"enroll_{config.enroll_images}") or {}
  report = {"eer": verification["eer"], "rank1": main.get("rank1"),
            "tar_at_far": verification["tar_at_far"],
            "verification": verification, "identification": identification,
            "open_set": open_set, "data_dir": config.data_dir,
            "runtime": config.runtime, "num_people": len(people),
            "num_images": int(len(labels)),
            "skipped": [list(s) for s in skipped]}
  if write:
    run = RunFolder(config.model_dir)
    fileio.write_json(run.face_report_path, report, indent=2)
    genuine, impostor = metrics.pair_scores(embeddings, labels)
    png = metrics.roc_png(genuine, impostor)
    with fileio.atomic_write(run.roc_path, "wb") as f:
      f.write(png)
  return report
