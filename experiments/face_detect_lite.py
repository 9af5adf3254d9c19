r"""Does MTCNN on LiteRT find the faces the Keras MTCNN finds, and how fast?

    python experiments/face_detect_lite.py --data_dir=/work/shared/data/orl-faces

Expected (ORL: 400 portraits of 40 people, 92x112 PGM; README and .DS_Store
files are skipped): both detectors find the same faces in every photo, the
same boxes and eyes (max difference 0 pixels), confidences within 1e-6;
identical aligned crops, hence identical identification decisions; LiteRT
faster per photo than Keras.

Runs both detectors (`imgrec.data.faces.FaceDetector`, Keras, and
`imgrec.inference.face_detect_lite.LiteFaceDetector` on the files
`export_face_detector` writes to --work) over every image under
--data_dir, and prints:

* faces found by each (photos with 0, 1, several faces) and in how many
  photos the counts differ;
* the largest box, eye and confidence differences where counts agree;
* the largest pixel difference between the 64x64 aligned crops of the
  largest face (what enrollment and identification embed);
* identification decisions: each person's first --enrolled photos are
  enrolled, the others identified by the nearest enrolled crop (cosine of
  the mean-removed gray pixels, no trained model needed); rank-1 of each
  detector and how many decisions differ;
* seconds a photo of each (after one warm-up photo).
"""

import os
import time

from absl import app
from absl import flags
import numpy as np

_DATA = flags.DEFINE_string("data_dir", "/work/shared/data/orl-faces",
                            "Folders of people's photos.")
_WORK = flags.DEFINE_string("work", "/tmp/face_detect_lite",
                            "Where the detector files are written.")
_ENROLLED = flags.DEFINE_integer("enrolled", 5, "Photos enrolled a person.")


def _photos(root):
  """(path, person) of every file Pillow opens as an image, sorted."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  out = []
  for folder, _, names in sorted(os.walk(root)):
    for name in sorted(names):
      path = os.path.join(folder, name)
      try:
        with Image.open(path) as im:
          im.verify()
      except Exception:  # pylint: disable=broad-except
        continue  # Not an image (README, .DS_Store).
      out.append((path, os.path.basename(folder)))
  return out


def _detect_all(detector, images):
  """(faces of each image, seconds per image after the first)."""
  detector.detect(images[0])
  start = time.perf_counter()
  found = [detector.detect(rgb) for rgb in images]
  return found, (time.perf_counter() - start) / len(images)


def _identify(crops, people, enrolled):
  """Nearest enrolled crop's person for each probe: (decisions, rank-1)."""
  gray = np.stack([c.astype(np.float32).mean(-1).ravel() if c is not None
                   else np.zeros(64 * 64, np.float32) for c in crops])
  gray -= gray.mean(1, keepdims=True)
  gray /= np.maximum(np.linalg.norm(gray, axis=1, keepdims=True), 1e-6)
  seen, gallery, probes = {}, [], []
  for i, person in enumerate(people):
    seen[person] = seen.get(person, 0) + 1
    (gallery if seen[person] <= enrolled else probes).append(i)
  scores = gray[probes] @ gray[gallery].T
  decided = [people[gallery[j]] for j in scores.argmax(1)]
  right = np.mean([d == people[i] for d, i in zip(decided, probes)])
  return decided, float(right)


def main(argv):
  del argv
  from imgrec.data import decode  # pylint: disable=g-import-not-at-top
  from imgrec.data import faces as faces_lib  # pylint: disable=g-import-not-at-top
  from imgrec.faces import export  # pylint: disable=g-import-not-at-top
  from imgrec.inference import face_detect_lite  # pylint: disable=g-import-not-at-top
  if not face_detect_lite.has_detector(_WORK.value):
    export.export_face_detector(_WORK.value)
  listed = _photos(_DATA.value)
  images = [decode.read_file(path, 3) for path, _ in listed]
  people = [person for _, person in listed]
  print(f"{len(images)} photos of {len(set(people))} people")
  results = {}
  for name, detector in (
      ("keras", faces_lib.FaceDetector()),
      ("litert", face_detect_lite.LiteFaceDetector(_WORK.value))):
    found, seconds = _detect_all(detector, images)
    counts = np.array([len(f) for f in found])
    crops = [faces_lib.align_crop(rgb, f[0], 64) if f else None
             for rgb, f in zip(images, found)]
    decided, rank1 = _identify(crops, people, _ENROLLED.value)
    results[name] = (found, counts, crops, decided)
    print(f"{name}: faces in {int((counts > 0).sum())} photos (none in "
          f"{int((counts == 0).sum())}, several in {int((counts > 1).sum())}"
          f"), {seconds * 1000:.1f} ms a photo, pixel rank-1 {rank1:.4f}")
  (k_found, k_counts, k_crops, k_dec), (l_found, l_counts, l_crops,
                                        l_dec) = (results["keras"],
                                                  results["litert"])
  print(f"photos where the face counts differ: "
        f"{int((k_counts != l_counts).sum())}")
  box = eye = conf = crop = 0.0
  for a_faces, b_faces, a_crop, b_crop in zip(k_found, l_found, k_crops,
                                              l_crops):
    if len(a_faces) != len(b_faces):
      continue
    for a, b in zip(a_faces, b_faces):
      box = max(box, float(np.abs(np.subtract(a.box, b.box)).max()))
      eye = max(eye, float(np.abs(np.subtract(
          a.left_eye + a.right_eye, b.left_eye + b.right_eye)).max()))
      conf = max(conf, abs(a.confidence - b.confidence))
    if a_crop is not None:
      crop = max(crop, float(np.abs(a_crop.astype(int) - b_crop).max()))
  print(f"max differences: box {box:g} px, eyes {eye:g} px, confidence "
        f"{conf:.2e}, aligned 64x64 crop {crop:g} levels")
  print(f"identification decisions that differ: "
        f"{sum(a != b for a, b in zip(k_dec, l_dec))} of {len(k_dec)}")


if __name__ == "__main__":
  app.run(main)
