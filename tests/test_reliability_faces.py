"""Issue 22, items 5, 12 and 13: face galleries and the answers read from them.

One tiny embedder is trained in this process on generated "people" (as in
test_faces); the subprocess runs of `imgrec-faces` are slow-marked.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from imgrec.config import FaceIdentifyConfig
from imgrec.errors import ImgrecError
from imgrec.faces import gallery as gallery_lib
from imgrec.faces import recognize
from imgrec.metrics import verification as metrics
from conftest import write_people
from test_reliability import assert_one_line_error
from test_reliability import run_cli

# Each needs a trained face embedder and its gallery: the whole suite runs
# them, tox -e fast does not.
pytestmark = pytest.mark.slow

MODEL = {"fingerprint": "f" * 64, "embedding_dim": 4, "name": "toy"}


@pytest.fixture(scope="module")
def run(face_run, tmp_path_factory):
  """(model_dir, unseen people root): 5 unseen people of 8 photos each."""
  _, result = face_run
  unseen = write_people(tmp_path_factory.mktemp("unseen") / "unseen", 5,
                        per_person=8, seed=1)
  return result["model_dir"], unseen


def config(run, gallery, **kw):
  """The fields of a face command's record (each command takes a dict)."""
  return dict(model_dir=run[0], detect=False, gallery=str(gallery), **kw)


def person(run, index):
  return os.path.join(run[1], f"person{index:02d}")


def junk_folder(root, name, count=3):
  folder = os.path.join(root, name)
  os.makedirs(folder)
  for i in range(count):
    with open(os.path.join(folder, f"{i}.png"), "wb") as f:
      f.write(b"not an image " + bytes([i]))
  return folder


def unit(rows):
  rows = np.asarray(rows, float)
  return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# --- 5: two enrollments at once, a gallery that is a link ---------------------


def test_enroll_merges_into_what_another_enrollment_wrote(run, tmp_path,
                                                          monkeypatch):
  gallery = tmp_path / "g.json"
  faces = recognize.Recognizer.faces
  calls = []

  def another_process_enrolls_meanwhile(self, paths):
    # While this enrollment embeds its photos, another one saves s5.
    if not calls:
      calls.append(1)
      recognize.enroll(config(run, gallery), [person(run, 1)])
    return faces(self, paths)

  monkeypatch.setattr(recognize.Recognizer, "faces",
                      another_process_enrolls_meanwhile)
  _, summary = recognize.enroll(config(run, gallery), [person(run, 0)])
  assert summary[0]["enrolled"] == 8
  assert gallery_lib.Gallery.load(gallery).names == ["person01", "person00"]


def test_a_gallery_that_is_a_link_is_written_through(run, tmp_path):
  shared = tmp_path / "shared" / "people.json"
  shared.parent.mkdir()
  recognize.enroll(config(run, shared), [person(run, 0)])
  link = tmp_path / "g.json"
  link.symlink_to(shared)
  recognize.enroll(config(run, link), [person(run, 1)])
  assert os.path.islink(link)
  assert gallery_lib.Gallery.load(shared).names == ["person00", "person01"]


@pytest.mark.slow  # Two imgrec-faces processes at once.
def test_two_enrollments_at_once_both_land(run, tmp_path):
  """The case as filed: enroll s4 and s5 into g.json at the same time."""
  for index, name in ((3, "s4"), (4, "s5")):
    shutil.copytree(person(run, index), tmp_path / name)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
  procs = [subprocess.Popen(
      [sys.executable, "-m", "imgrec.cli.faces", "enroll",
       f"--model_dir={run[0]}", "--detect=false",
       f"--gallery={tmp_path / 'g.json'}", str(tmp_path / name)],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
           for name in ("s4", "s5")]
  outputs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-2000:]
    assert "8 images enrolled" in out
  loaded = gallery_lib.Gallery.load(tmp_path / "g.json")
  assert sorted(loaded.names) == ["s4", "s5"]
  assert [len(loaded.sources(n)) for n in ("s4", "s5")] == [8, 8]


# --- 12: identify decides at the same threshold as verify ---------------------


def test_identify_without_calibration_uses_the_embedders_threshold(run,
                                                                   tmp_path):
  """As filed: enroll five photos of each unseen person, identify the
  others with a gallery never calibrated: each is named, not "unknown"."""
  gallery = tmp_path / "g.json"
  probes = []
  for index in range(5):
    folder = tmp_path / "enroll" / f"person{index:02d}"
    folder.mkdir(parents=True)
    for i in range(1, 9):
      source = os.path.join(person(run, index), f"{i}.png")
      if i <= 5:
        shutil.copy(source, folder)
      else:
        probes.append(source)
  recognize.enroll(config(run, gallery),
                   sorted(str(p) for p in (tmp_path / "enroll").iterdir()))
  assert gallery_lib.Gallery.load(gallery).threshold is None
  rows = recognize.identify(config(run, gallery), probes)
  recognizer = recognize.Recognizer(FaceIdentifyConfig(**config(run,
                                                                gallery)))
  eer = recognizer.embedder.info["eer_threshold"]
  assert {r["threshold_source"] for r in rows} == {"embedder validation EER"}
  assert all(r["threshold"] == pytest.approx(eer) for r in rows)
  for r in rows:
    expected = r["rank"][0][0] if r["score"] >= eer else "unknown"
    assert r["identity"] == expected
  truth = [os.path.basename(os.path.dirname(p)) for p in probes]
  named = sum(r["identity"] == t for r, t in zip(rows, truth))
  assert named >= len(probes) // 2, rows  # Was 0: all "unknown".
  # verify decides at the same threshold and says so.
  same = recognize.verify(config(run, gallery), probes[0], probes[1])
  assert (same["threshold"], same["threshold_source"]) == (
      rows[0]["threshold"], "embedder validation EER")


def test_a_calibrated_gallery_decides_and_says_so(run, tmp_path):
  gallery = tmp_path / "g.json"
  recognize.enroll(config(run, gallery), [person(run, 0)])
  calibration = recognize.calibrate(config(run, gallery, data_dir=run[1],
                                           target_far=0.1))
  row = recognize.identify(config(run, gallery),
                           [os.path.join(person(run, 0), "1.png")])[0]
  assert row["threshold_source"] == "gallery calibration"
  assert row["threshold"] == calibration["threshold"]


# --- 13: deduplication, names, damaged files ----------------------------------


def test_enrolling_the_same_folder_twice_adds_nothing(run, tmp_path):
  gallery = tmp_path / "g.json"
  recognize.enroll(config(run, gallery), [person(run, 0)])
  _, summary = recognize.enroll(config(run, gallery), [person(run, 0)])
  assert summary[0]["enrolled"] == 0 and len(summary[0]["duplicates"]) == 8
  assert len(gallery_lib.Gallery.load(gallery).sources("person00")) == 8
  # A copy of one of them, under another name: the same bytes, found.
  other = tmp_path / "eve"
  other.mkdir()
  shutil.copy(os.path.join(person(run, 0), "3.png"), other / "copy.png")
  shutil.copy(os.path.join(person(run, 1), "3.png"), other / "new.png")
  _, summary = recognize.enroll(config(run, gallery), [str(other)])
  assert summary[0]["enrolled"] == 1
  assert summary[0]["duplicates"] == [(str(other / "copy.png"), "person00")]
  stored = json.loads(gallery.read_text())["identities"]["eve"]
  assert len(stored["hashes"]) == 1 and len(stored["hashes"][0]) == 64


def test_gallery_enroll_refuses_an_image_already_enrolled():
  g = gallery_lib.Gallery.new(MODEL)
  g.enroll("ada", np.eye(4)[:1], ["a.jpg"], MODEL, hashes=["h1"])
  with pytest.raises(ImgrecError, match="already enrolled as 'ada'"):
    g.enroll("bo", np.eye(4)[1:2], ["b.jpg"], MODEL, hashes=["h1"])
  with pytest.raises(ImgrecError, match="already enrolled"):
    g.enroll("bo", np.eye(4)[1:3], ["b.jpg", "c.jpg"], MODEL,
             hashes=["h2", "h2"])
  assert g.names == ["ada"] and g.holder("h1") == "ada"


def test_a_gallery_naming_a_person_twice_is_damaged(tmp_path):
  path = tmp_path / "g.json"
  g = gallery_lib.Gallery.new(MODEL)
  g.enroll("bob", np.eye(4)[:1], ["1.jpg"], MODEL)
  g.save(path)
  entry = json.dumps(json.loads(path.read_text())["identities"]["bob"])
  text = path.read_text()
  doubled = text.replace('"identities": {"bob": ' + entry,
                         '"identities": {"bob": ' + entry + ', "bob": '
                         + entry)
  assert doubled != text
  path.write_text(doubled)
  with pytest.raises(ImgrecError, match="'bob' appears twice") as error:
    gallery_lib.Gallery.load(path)
  assert "damaged" in str(error.value) and "\n" not in str(error.value)


def test_two_folders_of_one_name_are_not_merged(run, tmp_path):
  for parent, index in (("x", 0), ("y", 1)):
    shutil.copytree(person(run, index), tmp_path / parent / "bob")
  sources = [str(tmp_path / "x" / "bob"), str(tmp_path / "y" / "bob")]
  with pytest.raises(ImgrecError, match="both named 'bob'.*--name"):
    recognize.enroll(config(run, tmp_path / "g.json"), sources)
  assert not (tmp_path / "g.json").exists()
  # Said on purpose, they are one person.
  _, summary = recognize.enroll(config(run, tmp_path / "g.json",
                                       name="bob"), sources)
  assert summary[0]["enrolled"] == 16


@pytest.mark.parametrize("value", [-5.0, 1.5])
def test_a_threshold_that_is_no_cosine_is_refused(tmp_path, value):
  g = gallery_lib.Gallery.new(MODEL)
  calibration = metrics.calibrate_threshold([0.9, 0.8], [0.1, 0.2], 0.4)
  with pytest.raises(ImgrecError, match="between -1 and 1"):
    g.set_threshold(dict(calibration, threshold=value))
  g.set_threshold(calibration)
  path = tmp_path / "g.json"
  g.save(path)
  data = json.loads(path.read_text())
  data["threshold"]["value"] = value
  path.write_text(json.dumps(data))
  with pytest.raises(ImgrecError, match="damaged.*between -1 and 1"):
    gallery_lib.Gallery.load(path)


def test_names_that_break_a_line_of_output_are_refused(run, tmp_path):
  for name in ("bob\nalice", "tab\there", " "):
    with pytest.raises(ImgrecError, match="line break|blank"):
      gallery_lib.Gallery.new(MODEL).enroll(name, np.eye(4)[:1], ["a"],
                                            MODEL)
  with pytest.raises(ImgrecError, match="line break"):
    recognize.enroll(config(run, tmp_path / "g.json", name="bob\nalice"),
                     [person(run, 0)])
  assert not (tmp_path / "g.json").exists()
  g = gallery_lib.Gallery.new(MODEL)
  g.enroll("bob", np.eye(4)[:1], ["a"], MODEL)
  g.save(tmp_path / "g.json")
  text = (tmp_path / "g.json").read_text().replace('"bob"', '"bob\\nalice"')
  (tmp_path / "g.json").write_text(text)
  with pytest.raises(ImgrecError, match="damaged.*line break"):
    gallery_lib.Gallery.load(tmp_path / "g.json")


def test_enroll_with_nobody_enrolled_fails_and_writes_nothing(run, tmp_path):
  junk = junk_folder(tmp_path, "junk")
  with pytest.raises(ImgrecError, match="Nobody was enrolled.*0 of 3.*"
                     "3 unreadable"):
    recognize.enroll(config(run, tmp_path / "g.json"), [junk])
  assert not (tmp_path / "g.json").exists()


def test_identify_with_no_face_reports_each_photo(run, tmp_path):
  gallery = tmp_path / "g.json"
  recognize.enroll(config(run, gallery), [person(run, 0)])
  junk = junk_folder(tmp_path, "junk", 2)
  rows = recognize.identify(config(run, gallery), [junk])
  assert [r["source"] for r in rows] == [os.path.join(junk, "0.png"),
                                         os.path.join(junk, "1.png")]
  assert all(r["error"].startswith("unreadable: ") for r in rows)
  assert not any("probes" in r["error"] for r in rows)


def test_max_image_pixels_is_a_faces_flag_and_is_applied(run, tmp_path):
  big = tmp_path / "big"
  big.mkdir()
  Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(big / "1.png")
  shutil.copy(os.path.join(person(run, 0), "1.png"), big / "2.png")
  _, summary = recognize.enroll(
      config(run, tmp_path / "g.json", max_image_pixels=32 * 32), [str(big)])
  assert summary[0]["enrolled"] == 1
  (path, status, message), = summary[0]["skipped"]
  assert path.endswith("1.png") and status == "unreadable"
  assert "--max_image_pixels" in message
  with pytest.raises(ImgrecError, match="max_image_pixels"):
    FaceIdentifyConfig(model_dir="m", gallery="g",
                       max_image_pixels=0).validate()


def test_calibrating_on_too_few_impostor_pairs_warns():
  """As filed: --target_far=0.001 on 100 impostor pairs."""
  rng = np.random.default_rng(0)
  c = metrics.calibrate_threshold(rng.uniform(0.6, 1, 50),
                                  rng.uniform(-0.2, 0.5, 100), 0.001)
  assert c["far_ci"][1] == pytest.approx(0.0362, abs=1e-4)
  assert not c["enough_pairs"] and c["pairs_needed"] == 3688
  # As many pairs with no false accept show the target; one fewer not.
  assert metrics.clopper_pearson(0, 3688)[1] <= 0.001
  assert metrics.clopper_pearson(0, 3687)[1] > 0.001
  c = metrics.calibrate_threshold(rng.uniform(0.6, 1, 50),
                                  rng.uniform(-0.2, 0.5, 3688), 0.001)
  assert c["enough_pairs"]


def test_calibrate_says_the_interval_and_the_pairs_needed(run, tmp_path):
  c = recognize.calibrate(config(run, tmp_path / "g.json", data_dir=run[1],
                                 target_far=0.001))
  # 5 people of 8 photos: 640 impostor pairs, fewer than 3688.
  assert c["num_impostor"] == 640
  assert "3688 impostor pairs" in c["warning"]
  assert f"{c['far_ci'][1]:.5f}" in c["warning"]
  assert "\n" not in c["warning"]
  # Stored all the same (with its interval): see recognize.calibrate.
  stored = gallery_lib.Gallery.load(tmp_path / "g.json").threshold
  assert stored["far_ci"] == c["far_ci"] and stored["num_impostor"] == 640
  assert recognize.calibrate(config(run, tmp_path / "g.json",
                                    data_dir=run[1], target_far=0.1)
                             )["warning"] is None


# --- every gallery writer and reader: special paths, damaged files ------------


def release_readers(fifo, stop, after=10.0):
  """Gives a reader blocked on `fifo` an end of file after a while, so that
  a command that opens the FIFO fails its test instead of hanging it."""
  deadline = time.monotonic() + after
  while not stop.is_set():
    if time.monotonic() > deadline:
      try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
      except OSError:
        pass  # Nobody is reading it.
    stop.wait(0.2)


def special_paths(tmp_path):
  fifo = tmp_path / "fifo.json"
  os.mkfifo(fifo)
  out = {"folder": tmp_path, "fifo": fifo}
  device = tmp_path / "null.json"
  try:
    os.mknod(device, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    out["device"] = device
  except (OSError, PermissionError):
    pass
  return out


@pytest.fixture
def special(tmp_path):
  paths = special_paths(tmp_path)
  stop = threading.Event()
  watchdog = threading.Thread(target=release_readers,
                              args=(paths["fifo"], stop), daemon=True)
  watchdog.start()
  yield paths
  stop.set()
  watchdog.join()


def test_a_gallery_that_is_no_file_is_refused_by_every_command(run,
                                                               special):
  for kind, path in special.items():
    commands = {
        "enroll": lambda: recognize.enroll(config(run, path),
                                           [person(run, 0)]),
        "calibrate": lambda: recognize.calibrate(config(
            run, path, data_dir=run[1])),
        "identify": lambda: recognize.identify(config(run, path),
                                               [person(run, 0)]),
        "verify": lambda: recognize.verify(
            config(run, path), os.path.join(person(run, 0), "1.png"),
            os.path.join(person(run, 0), "2.png")),
    }
    for command, call in commands.items():
      with pytest.raises(ImgrecError, match="folder|not a regular file"):
        call()
      mode = os.lstat(path).st_mode
      assert not stat.S_ISREG(mode), (kind, command)


def test_a_damaged_gallery_is_never_replaced(run, tmp_path):
  path = tmp_path / "g.json"
  for text in ('{"format": "imgrec-face-gallery", "version": 1', "",
               '{"format": "imgrec-face-gallery", "version": 1, "model": 3,'
               ' "threshold": null, "identities": {}}'):
    path.write_text(text)
    for call in (
        lambda: recognize.enroll(config(run, path), [person(run, 0)]),
        lambda: recognize.calibrate(config(run, path, data_dir=run[1]))):
      with pytest.raises(ImgrecError, match="damaged|not valid JSON") as e:
        call()
      assert "\n" not in str(e.value)
      assert path.read_text() == text


def test_the_gallery_is_never_one_of_the_photos(run, tmp_path):
  photo = tmp_path / "photo.png"
  shutil.copy(os.path.join(person(run, 0), "1.png"), photo)
  before = photo.read_bytes()
  with pytest.raises(ImgrecError, match="--gallery=.*also an input"):
    recognize.enroll(config(run, photo, name="ada"), [str(photo)])
  assert photo.read_bytes() == before
  # A gallery kept beside the photos is not taken for one of them.
  folder = tmp_path / "ada"
  shutil.copytree(person(run, 0), folder)
  gallery = folder / "g.json"
  recognize.enroll(config(run, gallery), [str(folder)])
  _, summary = recognize.enroll(config(run, gallery), [str(folder)])
  assert summary[0]["skipped"] == [] and len(summary[0]["duplicates"]) == 8


# --- the command line: exit codes, one-line errors ----------------------------


def faces_cli(run, *args):
  return run_cli("faces", *args, f"--model_dir={run[0]}", "--detect=false")


@pytest.mark.slow  # Several imgrec-faces processes.
def test_cli_exit_codes_and_the_threshold_line(run, tmp_path):
  gallery = f"--gallery={tmp_path / 'g.json'}"
  junk = junk_folder(tmp_path, "junk", 2)
  nobody = faces_cli(run, "enroll", gallery, junk)
  assert_one_line_error(nobody, "Nobody was enrolled")
  assert not (tmp_path / "g.json").exists()
  mixed = tmp_path / "mixed"
  shutil.copytree(person(run, 0), mixed)
  shutil.copy(os.path.join(junk, "0.png"), mixed / "junk.png")
  some = faces_cli(run, "enroll", gallery, str(mixed))
  assert some.returncode == 1, some.stderr[-2000:]
  assert "8 images enrolled, 1 skipped" in some.stdout
  assert "1 of 9 photos gave no usable face" in some.stderr
  again = faces_cli(run, "enroll", gallery, os.path.join(person(run, 0)))
  assert again.returncode == 0, again.stderr[-2000:]
  assert "0 images enrolled, 8 already enrolled (as 'mixed')" in again.stdout
  ident = faces_cli(run, "identify", gallery,
                    os.path.join(person(run, 0), "1.png"))
  assert ident.returncode == 0, ident.stderr[-2000:]
  assert ident.stdout.splitlines()[0].startswith("threshold ")
  assert "(embedder validation EER)" in ident.stdout.splitlines()[0]
  none = faces_cli(run, "identify", gallery, junk)
  assert_one_line_error(none, "none of the 2 photos gave a usable face")
  assert none.stdout.count("unreadable") == 2
  for bad in ("--top_k=abc", "--target_far=2", "--target_far=0",
              "--max_image_pixels=0",
              "--several=all"):
    assert_one_line_error(faces_cli(run, "identify", gallery, bad, junk),
                          bad.split("=")[0][2:])


@pytest.mark.slow  # Two imgrec-faces processes.
def test_cli_calibrate_warns_in_one_line(run, tmp_path):
  proc = faces_cli(run, "calibrate", f"--gallery={tmp_path / 'g.json'}",
                   f"--data_dir={run[1]}", "--target_far=0.001")
  assert proc.returncode == 0, proc.stderr[-2000:]
  warnings = [l for l in proc.stderr.splitlines() if "warning" in l]
  assert len(warnings) == 1 and "3688 impostor pairs" in warnings[0]
  verify = faces_cli(run, "verify", os.path.join(person(run, 0), "1.png"),
                     os.path.join(person(run, 0), "2.png"),
                     f"--gallery={tmp_path / 'g.json'}", "--format=json")
  row = json.loads(verify.stdout)
  assert row["threshold_source"] == "gallery calibration"
