"""Enroll, identify, verify, calibrate and evaluate with a trained face embedder.

Every command reads photos through `detect.load_faces` (detection and
alignment, or the whole photo of pre-cropped faces), so a photo with no
face, several faces or broken bytes is reported on its own line and the
others go on.
"""

import os
import re

import numpy as np

from imgrec import fileio
from imgrec.data import folder as folder_lib
from imgrec.errors import ImgrecError
from imgrec.faces import detect as detect_lib
from imgrec.faces import gallery as gallery_lib
from imgrec.faces import metrics
from imgrec.faces.embedder import Embedder
from imgrec.run_folder import RunFolder


def natural_key(path):
  """Sorts "2.pgm" before "10.pgm"."""
  return [int(t) if t.isdigit() else t.lower()
          for t in re.split(r"(\d+)", os.path.basename(path))]


class Recognizer:
  """An embedder plus how photos become face crops.

  Args:
    config: a FacesConfig (model_dir, runtime, detect, several).
  """

  def __init__(self, config):
    self.config = config
    self.embedder = Embedder.load(config.model_dir, config.runtime)
    self._detector = None

  def faces(self, paths):
    """(FaceResults in order, embeddings [n ok, D] of the ok ones)."""
    if self.config.detect and self._detector is None:
      self._detector = detect_lib.FaceDetector()
    results = detect_lib.load_faces(
        list(paths), self.embedder.image_size, detect=self.config.detect,
        detector=self._detector, several=self.config.several,
        margin=float(self.embedder.info.get("crop_margin", 0.2)))
    ok = [r.face for r in results if r.status == "ok"]
    size = self.embedder.image_size
    faces = np.stack(ok) if ok else np.zeros((0, size, size, 3), np.uint8)
    return results, self.embedder.embed(faces, flip=self.config.flip)


def image_files(sources):
  """Image files of files and folders (a folder: its images, sorted)."""
  out = []
  for source in sources:
    if os.path.isdir(source):
      found = [os.path.join(source, n) for n in os.listdir(source)
               if not n.startswith(".") and os.path.isfile(
                   os.path.join(source, n))]
      out += sorted(found, key=natural_key)
    elif os.path.exists(source):
      out.append(source)
    else:
      raise ImgrecError(f"{source} does not exist: pass image files or "
                        "folders of a person's images.")
  return out


def _require_gallery(config):
  if not config.gallery:
    raise ImgrecError("--gallery is required: the JSON file of enrolled "
                      "people (imgrec-faces enroll makes it).")


def enroll(config, sources):
  """Adds people to the gallery: each folder is one person (its name, or
  --name for a single source); a file source needs --name.

  Returns:
    (gallery, [{"person", "enrolled", "skipped": [(path, status, message)]}]).
  """
  _require_gallery(config)
  if not sources:
    raise ImgrecError("Pass the photos to enroll: a folder per person, or "
                      "image files with --name.")
  recognizer = Recognizer(config)
  info = recognizer.embedder.model_info
  gallery = (gallery_lib.Gallery.load(config.gallery)
             if os.path.exists(config.gallery) else gallery_lib.Gallery.new(
                 info))
  gallery.check_model(info)
  people = {}
  for source in sources:
    name = config.name or (os.path.basename(os.path.normpath(source))
                           if os.path.isdir(source) else None)
    if not name:
      raise ImgrecError(f"{source} is a file: say whose face it is with "
                        "--name=PERSON.")
    people.setdefault(name, []).extend(image_files([source]))
  summary = []
  for name, paths in people.items():
    results, embeddings = recognizer.faces(paths)
    used = [r.path for r in results if r.status == "ok"]
    skipped = [(r.path, r.status, r.message) for r in results
               if r.status != "ok"]
    if used:
      gallery.enroll(name, embeddings, used, info)
    summary.append({"person": name, "enrolled": len(used),
                    "skipped": skipped})
  gallery.save(config.gallery)
  return gallery, summary


def identify(config, sources):
  """One dict per photo: {"source", "identity", "score", "rank"} (identity
  "unknown" below the gallery's threshold), or {"source", "error"}."""
  _require_gallery(config)
  gallery = gallery_lib.Gallery.load(config.gallery)
  recognizer = Recognizer(config)
  gallery.check_model(recognizer.embedder.model_info)
  if not len(gallery):
    raise ImgrecError(f"{config.gallery} has nobody enrolled: run "
                      "imgrec-faces enroll first.")
  results, embeddings = recognizer.faces(image_files(sources))
  ranked = iter(gallery.identify(embeddings, top_k=config.top_k))
  out = []
  for r in results:
    if r.status != "ok":
      out.append({"source": r.path, "error": f"{r.status}: {r.message}"})
      continue
    rank = next(ranked)
    best_name, best_score = rank[0]
    known = gallery.threshold is not None and gallery.decide(best_score)
    out.append({"source": r.path,
                "identity": best_name if known else "unknown",
                "score": float(best_score),
                "rank": [[n, float(s)] for n, s in rank]})
  return out


def verify(config, path_a, path_b):
  """{"a", "b", "score", "same"}: one score and the decision at the
  gallery's calibrated threshold (--gallery), else the embedder's
  validation EER threshold."""
  recognizer = Recognizer(config)
  results, embeddings = recognizer.faces([path_a, path_b])
  for r in results:
    if r.status != "ok":
      raise ImgrecError(f"{r.path}: {r.status}: {r.message}")
  score = float(embeddings[0] @ embeddings[1])
  if config.gallery:
    gallery = gallery_lib.Gallery.load(config.gallery)
    gallery.check_model(recognizer.embedder.model_info)
    same = gallery.decide(score)
  else:
    threshold = recognizer.embedder.info.get("eer_threshold")
    if threshold is None:
      raise ImgrecError("No decision threshold: pass --gallery=G.json of a "
                        "calibrated gallery (imgrec-faces calibrate).")
    same = score >= threshold
  return {"a": path_a, "b": path_b, "score": score, "same": bool(same)}


def _labelled_faces(recognizer, data_dir):
  """(people, embeddings, labels, paths, skipped) of identity folders."""
  found = folder_lib.find_images(data_dir, min_classes=2, carve=False)
  paths, labels = [], []
  for split in found.splits.values():
    paths += split.paths
    labels += split.labels
  order = sorted(range(len(paths)),
                 key=lambda i: (labels[i], natural_key(paths[i])))
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
  --data_dir for --target_far; stores it in the gallery (made if absent)."""
  _require_gallery(config)
  if not config.data_dir:
    raise ImgrecError("--data_dir is required: identity folders of people "
                      "(your own, never trained on) to calibrate on.")
  recognizer = Recognizer(config)
  info = recognizer.embedder.model_info
  _, embeddings, labels, _, skipped = _labelled_faces(recognizer,
                                                      config.data_dir)
  genuine, impostor = metrics.pair_scores(embeddings, labels)
  calibration = metrics.calibrate_threshold(genuine, impostor,
                                            config.target_far)
  calibration["calibrated_on"] = os.path.abspath(config.data_dir)
  gallery = (gallery_lib.Gallery.load(config.gallery)
             if os.path.exists(config.gallery) else gallery_lib.Gallery.new(
                 info))
  gallery.check_model(info)
  gallery.set_threshold(calibration)
  gallery.save(config.gallery)
  calibration["skipped"] = len(skipped)
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
  """
  if not config.data_dir:
    raise ImgrecError("--data_dir is required: identity folders of people "
                      "the embedder never trained on.")
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
