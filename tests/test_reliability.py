"""A run folder that cannot lie, and hostile inputs that cannot hurt.

Each test is one case a user or an attacker can create; the in-process
tests are fast, the command-line ones check the one-line error a person
sees (exit status 2, no traceback).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from conftest import write_toy_folder
from imgrec import fileio
from imgrec import models
from imgrec import tasks
from imgrec.config import TrainConfig
from imgrec.data import folder as folder_lib
from imgrec.data import scan
from imgrec.data import sources
from imgrec.errors import ImgrecError
from imgrec.run_folder import RunFolder

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def run_cli(module, *args, env=None, timeout=300):
  return subprocess.run([sys.executable, "-m", f"imgrec.cli.{module}", *args],
                        capture_output=True, text=True, env=env or ENV,
                        timeout=timeout)


def assert_one_line_error(proc, message):
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  lines = [l for l in proc.stderr.strip().splitlines()
           if "error:" in l or "Traceback" in l]
  assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr


def snapshot(root):
  """Every path below `root` with its size and mtime (no links followed)."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
      path = os.path.join(dirpath, name)
      st = os.lstat(path)
      out[path] = (st.st_size, st.st_mtime_ns)
  return out


# --- 1, 2: the walk ------------------------------------------------------------


def test_symlink_loop_counts_each_file_once(tmp_path):
  data = write_toy_folder(tmp_path / "data", per_class=10)
  os.symlink("..", os.path.join(data, "red", "loop"))
  os.symlink(os.path.join(data, "blue"), os.path.join(data, "green", "b"))
  found = folder_lib.find_images(data, val_split=0.2, test_split=0.2)
  paths = [p for s in found.splits.values() for p in s.paths]
  assert len(paths) == 30
  reals = [os.path.realpath(p) for p in paths]
  assert len(set(reals)) == 30  # No file twice, so no file in two splits.
  why = dict(found.ignored)
  assert why[os.path.join(data, "red", "loop")] == "symlink_loop"
  # blue's files reached again through green/b are duplicates, not green.
  assert sum(w == "duplicate_file" for w in why.values()) == 10
  green = [p for p, l in zip(found.splits["train"].paths,
                             found.splits["train"].labels) if l == 1]
  assert not any("/green/b/" in p for p in green)


def test_links_out_of_the_tree_are_followed_only_when_asked(tmp_path):
  data = write_toy_folder(tmp_path / "data", per_class=4,
                          classes=["blue", "red"])
  elsewhere = write_toy_folder(tmp_path / "elsewhere", per_class=4,
                               classes=["green"])
  os.symlink(os.path.join(elsewhere, "green"), os.path.join(data, "green"))
  with pytest.raises(ImgrecError, match="--allow_outside"):
    folder_lib.find_images(data)
  found = folder_lib.find_images(data, allow_outside=True)
  assert found.class_names == ["blue", "green", "red"]


def test_fifo_is_skipped_and_nothing_blocks(tmp_path):
  data = write_toy_folder(tmp_path / "data", per_class=6)
  fifo = os.path.join(data, "red", "pipe.png")
  os.mkfifo(fifo)
  result = {}

  def work():
    found = folder_lib.find_images(data, carve=False)
    result["scan"] = scan.scan_folder(found, prepared_dir=str(
        tmp_path / "prepared"), progress=False)

  thread = threading.Thread(target=work, daemon=True)
  thread.start()
  thread.join(60)
  assert not thread.is_alive(), "listing or scanning blocked on a FIFO"
  _, report = result["scan"]
  assert report["totals"]["found"] == 18
  assert {"path": fifo, "why": "not_a_regular_file"} in report["ignored"]


# --- 3, 4, 5: settings, reuse, two writers --------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--val_split=1.5", "--val_split=-0.5",
                                  "--test_split=0.5"])
def test_bad_split_fractions_exit_2(tmp_path, flag):
  extra = ["--val_split=0.5"] if flag == "--test_split=0.5" else []
  proc = run_cli("train", f"--data_dir={tmp_path}", flag, *extra)
  assert_one_line_error(proc, "split")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  tmp = tmp_path_factory.mktemp("reuse")
  data = write_toy_folder(tmp / "data", per_class=8)
  config = TrainConfig(data_dir=data, model_dir=str(tmp / "run"), epochs=1,
                       image_size=16, batch_size=8, export=False, verbose=0)
  trainer.train(config)
  return config


def test_rerun_with_other_settings_is_refused(finished_run):
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  run = RunFolder(finished_run.model_dir)
  before = {p: open(p, "rb").read() for p in (run.config_path,
                                               run.splits_path)}
  with pytest.raises(ImgrecError, match=r"seed: 42 -> 7.*val_split"):
    trainer.train(finished_run.replace(seed=7, val_split=0.3))
  for path, data in before.items():
    assert open(path, "rb").read() == data, path
  # Settings that shape nothing of the run may change.
  trainer.train(finished_run.replace(verbose=2, top_k=2))
  for path, data in before.items():
    assert open(path, "rb").read() == data, path


@pytest.mark.slow  # Seconds of retraining or re-predicting.
def test_rerun_on_changed_data_is_refused_then_overwrite(finished_run,
                                                         tmp_path):
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  extra = os.path.join(finished_run.data_dir, "red", "extra.png")
  shutil.copy(os.path.join(finished_run.data_dir, "red", "000.png"), extra)
  try:
    with pytest.raises(ImgrecError, match="data of the run .* changed"):
      trainer.train(finished_run)
    result = trainer.train(finished_run.replace(overwrite=True, seed=3))
    assert RunFolder(result["model_dir"]).read_config().seed == 3
  finally:
    os.remove(extra)


def test_second_writer_is_refused_and_a_dead_one_frees_the_lock(tmp_path):
  run = RunFolder(tmp_path / "run")
  holder = subprocess.Popen(
      [sys.executable, "-c",
       "import sys, time\n"
       "from imgrec.run_folder import RunFolder\n"
       f"with RunFolder({str(run.path)!r}).lock('holder'):\n"
       "  print('locked', flush=True)\n"
       "  time.sleep(60)\n"], stdout=subprocess.PIPE, text=True, env=ENV)
  assert holder.stdout.readline().strip() == "locked"
  with pytest.raises(ImgrecError, match=r"in use by another imgrec process "
                     r"\(holder, pid"):
    with run.lock("second"):
      pass
  holder.send_signal(signal.SIGKILL)  # A crash: no cleanup runs.
  holder.wait()
  with run.lock("after the crash"):
    pass


@pytest.mark.slow
def test_two_trainings_at_once_one_stops_with_one_line(tmp_path):
  data = write_toy_folder(tmp_path / "data", per_class=8)
  run = RunFolder(tmp_path / "run")
  with run.lock("imgrec-train"):
    proc = run_cli("train", f"--data_dir={data}", f"--model_dir={run.path}",
                   "--epochs=1", "--image_size=16")
  assert_one_line_error(proc, "in use by another imgrec process")


# --- 6, 7: names and the data folder ------------------------------------------


def test_class_names_that_cannot_round_trip_are_refused(tmp_path):
  data = write_toy_folder(tmp_path / "data", per_class=3)
  os.rename(os.path.join(data, "red"), os.path.join(data, "r\ned"))
  with pytest.raises(ImgrecError, match="line breaks"):
    folder_lib.find_images(data)
  csv_path = tmp_path / "labels.csv"
  csv_path.write_text('path,label\ndata/blue/000.png,"a\nb"\n'
                      "data/green/000.png,green\n")
  with pytest.raises(ImgrecError, match="line breaks"):
    sources.read_labels_csv(str(csv_path))


@pytest.mark.slow
def test_model_dir_inside_the_data_is_refused(tmp_path):
  data = write_toy_folder(tmp_path / "data", per_class=3)
  with pytest.raises(ImgrecError, match="never writes into your data"):
    tasks.resolve(TrainConfig(data_dir=data,
                              model_dir=os.path.join(data, "runs", "x")))
  # The tired user's default: `imgrec-train --data_dir=.` in the data.
  proc = subprocess.run([sys.executable, "-m", "imgrec.cli.train",
                         "--data_dir=."], cwd=data, capture_output=True,
                        text=True, env=ENV, timeout=300)
  assert_one_line_error(proc, "never writes into your data")
  assert not os.path.exists(os.path.join(data, "runs"))


@pytest.mark.slow
def test_training_and_scanning_never_write_into_the_data(tmp_path):
  data = write_toy_folder(tmp_path / "data", per_class=8)
  before = snapshot(data)
  env = dict(ENV, XDG_CACHE_HOME=str(tmp_path / "cache"))
  proc = run_cli("scan", f"--data_dir={data}", env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  trainer.train(TrainConfig(data_dir=data, model_dir=str(tmp_path / "run"),
                            epochs=1, image_size=16, export=False,
                            verbose=0))
  assert snapshot(data) == before


# --- 12: reports never hold file contents ---------------------------------------


def test_csv_naming_system_files_is_refused_and_nothing_leaks(tmp_path):
  secret = tmp_path / "secret.jpg"
  secret.write_text("root:x:0:0:TOPSECRET-LINE:/root:/bin/bash\n")
  data = write_toy_folder(tmp_path / "d" / "data", per_class=3)
  rows = [f"data/{c}/{i:03d}.png,{c}" for c in ("blue", "red")
          for i in range(3)]
  csv_path = tmp_path / "d" / "labels.csv"
  csv_path.write_text("path,label\n" + "\n".join(
      rows + ["../secret.jpg,red", "/etc/passwd,blue"]) + "\n")
  del data
  found = sources.read_labels_csv(str(csv_path))
  assert sorted(m["reason"] for m in found.missing) == [
      "outside_csv_folder"] * 2
  report_path = tmp_path / "report.json"
  scan.scan_folder(found, prepared_dir=str(tmp_path / "p"), progress=False,
                   report_path=str(report_path), max_bad_fraction=1.0)
  assert "TOPSECRET" not in report_path.read_text()
  # Allowed on purpose, the text file is still only named, never quoted.
  found = sources.read_labels_csv(str(csv_path), allow_outside=True)
  scan.scan_folder(found, prepared_dir=str(tmp_path / "p"), progress=False,
                   report_path=str(report_path), max_bad_fraction=1.0)
  text = report_path.read_text()
  assert "secret.jpg" in text and "TOPSECRET" not in text
  assert "root:x" not in text


# --- 8, 9, 10: faults ------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
  """A 3 MB tmpfs (root only); yields its path and a resize function."""
  mount = tmp_path / "disk"
  mount.mkdir()
  if os.geteuid() != 0 or subprocess.run(
      ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
      capture_output=True).returncode:
    pytest.skip("needs root and tmpfs mounts")

  def resize(size):
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)],
                   check=True)

  try:
    yield str(mount), resize
  finally:
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_full_disk_fails_cleanly_keeps_results_and_rerun_resumes(tmp_path,
                                                                 small_disk):
  disk, resize = small_disk
  data = write_toy_folder(tmp_path / "data", per_class=8)
  args = [f"--data_dir={data}", f"--model_dir={disk}/run", "--epochs=4",
          "--image_size=32", "--batch_size=8", "--model=resnet",
          "--export=false", "--verbose=0"]
  resize("11m")  # Room for the first epoch's outputs, not the second's.
  proc = run_cli("train", *args)
  assert_one_line_error(proc, "Not enough free space")
  assert "resumes after epoch" in proc.stderr
  run = RunFolder(f"{disk}/run")
  from imgrec import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  tasks_lib.load_model(run.best_model_path)  # The last good one is intact.
  resize("64m")
  proc = run_cli("train", *args)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "resuming after epoch" in proc.stderr
  with open(run.history_path) as f:
    assert [l.split(",")[0] for l in f.read().split()[1:]] == [
        "0", "1", "2", "3"]


@pytest.mark.slow
def test_read_only_model_dir_fails_before_any_work(tmp_path, small_disk):
  disk, _ = small_disk
  subprocess.run(["mount", "-o", "remount,ro", disk], check=True)
  data = write_toy_folder(tmp_path / "data", per_class=4)
  for module, args in (("train", [f"--data_dir={data}"]),
                       ("evaluate", []), ("export", [])):
    proc = run_cli(module, f"--model_dir={disk}", *args)
    assert proc.returncode == 2, (module, proc.stderr[-1500:])
    assert "Traceback" not in proc.stderr, module
    assert ("Cannot write into model_dir" in proc.stderr or
            "No training config" in proc.stderr or
            "No trained model" in proc.stderr), (module, proc.stderr)


@pytest.mark.slow
def test_file_in_place_of_a_folder(tmp_path):
  data = write_toy_folder(tmp_path / "data", per_class=4)
  (tmp_path / "afile").write_text("x")
  proc = run_cli("train", f"--data_dir={data}",
                 f"--model_dir={tmp_path / 'afile'}")
  assert_one_line_error(proc, "is a file, not a folder")
  run = tmp_path / "run"
  run.mkdir()
  (run / "export").write_text("x")
  proc = run_cli("train", f"--data_dir={data}", f"--model_dir={run}")
  assert_one_line_error(proc, "a file where imgrec keeps a folder")


# The tests on a trained and exported run (Keras, SavedModel, TFLite): the
# whole suite runs them, tox -e fast (no export-heavy checks) does not.
_EXPORTED = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  tmp = tmp_path_factory.mktemp("exported")
  data = write_toy_folder(tmp / "data", per_class=8)
  result = trainer.train(TrainConfig(
      data_dir=data, model_dir=str(tmp / "run"), epochs=1, image_size=16,
      batch_size=8, verbose=0))
  return RunFolder(result["model_dir"]), data


@pytest.mark.slow  # Exports and measures every format.
def test_leftovers_of_a_killed_export_are_cleaned(exported):
  from imgrec.config import ExportConfig  # pylint: disable=g-import-not-at-top
  from imgrec.export import exporter  # pylint: disable=g-import-not-at-top
  run, _ = exported
  stale = [os.path.join(run.export_dir, fileio.TEMP_PREFIX + "saved_model-abc"),
           os.path.join(run.export_dir, fileio.TEMP_PREFIX + "model.tflite")]
  os.makedirs(stale[0])
  open(stale[1], "w").close()
  exporter.export(ExportConfig(model_dir=run.path))
  assert not any(os.path.exists(p) for p in stale)
  assert os.stat(run.saved_model_dir).st_mode & 0o777 == 0o755


# --- 11, 13, 15, 16: hostile inputs and model files -------------------------------


def _bomb(path, side=20000):
  """A valid 1-bit PNG of side x side zeros: tiny file, gigabytes decoded."""
  import struct  # pylint: disable=g-import-not-at-top
  import zlib  # pylint: disable=g-import-not-at-top

  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data)))

  raw = zlib.compress(bytes(side * (side // 8 + 1)))
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(
        ">IIBBBBB", side, side, 1, 0, 0, 0, 0)) + chunk(b"IDAT", raw) +
            chunk(b"IEND", b""))
  return str(path)


@_EXPORTED
def test_huge_image_is_refused_from_its_header(exported, tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  run, data = exported
  bomb = _bomb(tmp_path / "bomb.png")
  clf = Classifier.load(run.tflite_path())
  good = os.path.join(data, "red", "000.png")
  first, second = clf.predict([bomb, good])
  assert "declares" in first.error and first.label is None
  assert second.label is not None and second.error is None
  with pytest.raises(ImgrecError, match="declares"):
    clf.predict(bomb)
  served = tf.saved_model.load(run.saved_model_dir)
  with pytest.raises(tf.errors.InvalidArgumentError, match="limit"):
    served.signatures["serving_bytes"](image_bytes=tf.constant(
        [open(bomb, "rb").read()]))


@_EXPORTED
@pytest.mark.parametrize("item, message", [
    (np.full((8, 8, 3), 0.5, np.float32), "0..1"),
    (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
    (np.full((8, 8, 3), 300, np.uint16), "above 255"),
    (np.ones((8, 8, 3), bool), "dtype bool"),
    (np.zeros((0, 0, 3), np.uint8), "empty"),
    (np.zeros((8, 8, 2), np.uint8), "must be"),
    (None, "None"),
])
def test_classifier_input_contract(exported, item, message):
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  run, _ = exported
  clf = Classifier.load(run.best_model_path)
  if item is None:
    with pytest.raises(ImgrecError, match=message):
      clf.predict(item)
    for number in (5, 2.5):  # Not a list of inputs: one line, no TypeError.
      for call in (clf.predict, clf.predict_proba):
        with pytest.raises(ImgrecError, match="Expected an image path"):
          call(number)
    return
  with pytest.raises(ImgrecError, match=f"Input 0.*{message}"):
    clf.predict(item)
  # In a list, the bad item gets an error and the rest are classified.
  results = clf.predict([item, np.full((8, 8, 3), 128, np.uint8)])
  assert message in results[0].error and results[1].label is not None


@_EXPORTED
def test_classifier_accepts_what_the_contract_allows(exported):
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  run, _ = exported
  clf = Classifier.load(run.best_model_path)
  image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), np.uint8)
  want = clf.predict_proba(image)
  np.testing.assert_allclose(clf.predict_proba(image.astype(np.float32)),
                             want, atol=1e-6)
  np.testing.assert_allclose(clf.predict_proba(image.astype(np.int64)),
                             want, atol=1e-6)
  rgba = np.dstack([image, np.full((20, 30), 255, np.uint8)])
  np.testing.assert_allclose(clf.predict_proba(rgba), want, atol=1e-6)
  with pytest.raises(ImgrecError, match="top_k"):
    clf.predict(image, top_k=0)


@_EXPORTED
def test_damaged_model_files_are_one_line_errors(exported, tmp_path):
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  run, _ = exported
  (tmp_path / "empty.tflite").write_bytes(b"")
  (tmp_path / "garbage.keras").write_bytes(os.urandom(1000))
  keras_bytes = open(run.best_model_path, "rb").read()
  (tmp_path / "cut.keras").write_bytes(keras_bytes[:len(keras_bytes) // 2])
  tflite = open(run.tflite_path(), "rb").read()
  (tmp_path / "cut.tflite").write_bytes(tflite[:len(tflite) // 3])
  broken = tmp_path / "sm"
  shutil.copytree(run.saved_model_dir, broken)
  (broken / "saved_model.pb").write_bytes(b"\x0a\xff garbage")
  for name, message in (("empty.tflite", "empty"),
                        ("garbage.keras", "not a .keras file"),
                        ("cut.keras", "not a .keras file"),
                        ("cut.tflite", "TFLite"),
                        ("sm", "not a readable SavedModel")):
    with pytest.raises(ImgrecError, match=message):
      Classifier.load(str(tmp_path / name))


@pytest.mark.slow  # A subprocess.
def test_a_damaged_model_is_one_line_from_the_command_line(exported,
                                                           tmp_path):
  (tmp_path / "garbage.keras").write_bytes(os.urandom(1000))
  proc = run_cli("predict", f"--model={tmp_path / 'garbage.keras'}",
                 os.path.join(exported[1], "red", "000.png"))
  assert_one_line_error(proc, "not a .keras file")


def test_saved_model_with_side_effects_is_refused_unless_trusted(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  victim = tmp_path / "written_by_the_model.txt"

  class Crafted(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3],
                                                 tf.uint8)])
    def serve(self, images):
      tf.io.write_file(str(victim), tf.io.read_file("/etc/hostname"))
      return {"probabilities": tf.ones([tf.shape(images)[0], 2])}

  crafted = Crafted()
  path = str(tmp_path / "crafted")
  tf.saved_model.save(crafted, path,
                      signatures={"serving_default": crafted.serve})
  with pytest.raises(ImgrecError, match="ReadFile, WriteFile.*trust_model"):
    Classifier.load(path)
  assert not victim.exists()
  Classifier.load(path, trust_model=True)  # The user vouches for it.


# --- 14, 17, 18: flags, weights, chatter ---------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("module, args, message", [
    ("evaluate", ["--model_dir=x", "--batch_size=-5"], "batch_size"),
    ("export", ["--model_dir=x", "--top_k=-2"], "top_k"),
    ("export", ["--model_dir=x", "--top_k=0"], "top_k"),
    ("export", ["--model_dir=x", "--calibration_images=0"],
     "calibration_images"),
    ("predict", ["--model=x", "--top_k=0", "a.png"], "top_k"),
    ("scan", ["--max_image_pixels=0"], "max_image_pixels"),
])
def test_every_flag_is_checked(module, args, message):
  assert_one_line_error(run_cli(module, *args), message)


@pytest.mark.slow  # Exports and measures every format.
def test_int8_file_that_stayed_float_is_refused(exported, monkeypatch):
  from imgrec.export import exporter  # pylint: disable=g-import-not-at-top
  from imgrec.export import tflite as tflite_lib  # pylint: disable=g-import-not-at-top
  run, _ = exported
  with tflite_lib.Converter(tasks.load_model(run.best_model_path),
                            run.export_dir) as converter:
    float_bytes = converter.convert("float")
  # A converter that keeps the model in float without a word.
  monkeypatch.setattr(tflite_lib.Int8Calibration, "quantize",
                      lambda self, **kwargs: float_bytes)
  with pytest.raises(ImgrecError, match="not an integer model"):
    exporter.export_run(run, quantizations=("int8",), calibration_images=8)
  assert not os.path.exists(run.tflite_path("int8"))


def test_missing_imagenet_weights_say_how_to_do_without(monkeypatch,
                                                        tmp_path):
  from imgrec.models import transfer  # pylint: disable=g-import-not-at-top

  def offline(name, input_shape):
    raise Exception(  # pylint: disable=broad-exception-raised
        "URL fetch failure on https://example.org/w/mobilenet_v2_no_top.h5: "
        "None -- [Errno -2] Name or service not known")

  monkeypatch.setattr(transfer, "fetch_imagenet_weights", offline)
  with pytest.raises(ImgrecError, match=r"mobilenet_v2_no_top\.h5.*"
                     r"--weights=none"):
    tasks.resolve(TrainConfig(model="mobilenet_v2",
                              data_dir=str(tmp_path / "absent")))


@pytest.mark.slow
def test_a_run_prints_imgrec_lines_not_library_chatter(tmp_path):
  data = write_toy_folder(tmp_path / "data", per_class=6)
  proc = run_cli("train", f"--data_dir={data}",
                 f"--model_dir={tmp_path / 'run'}", "--epochs=1",
                 "--image_size=16", "--verbose=0",
                 env={k: v for k, v in ENV.items()
                      if k != "TF_CPP_MIN_LOG_LEVEL"})
  assert proc.returncode == 0, proc.stderr[-2000:]
  for chatter in ("Sharding callback", "Writing fingerprint", "oneDNN",
                  "absl::InitializeLog", "unsupported characters"):
    assert chatter not in proc.stderr + proc.stdout, chatter
  assert all(l.startswith("imgrec: ") for l in proc.stderr.splitlines()), (
      proc.stderr)
  assert "test accuracy" in proc.stdout
  # Output is not a terminal: one line an epoch, no bar redrawn per step,
  # and no "nan" for the latency training does not measure.
  assert "\x1b[" not in proc.stdout and "━" not in proc.stdout
  assert "nan" not in proc.stdout


def test_int8_of_a_recurrent_model_is_refused_before_any_file(tmp_path):
  # TFLite's calibrator segfaults on LSTMs (TF 2.21): a crash with no word.
  from imgrec.export import exporter  # pylint: disable=g-import-not-at-top
  from imgrec.models import ensemble  # pylint: disable=g-import-not-at-top
  lstm = models.create_model("row_lstm", 3, (12, 12, 1))
  cnn = models.create_model("simple_cnn", 3, (12, 12, 1))
  run = RunFolder(tmp_path / "run")
  for model in (lstm, ensemble.build_ensemble([cnn, lstm])):
    with pytest.raises(ImgrecError, match="recurrent layers.*--tflite=float"):
      exporter.export_run(run, model=model, quantizations=("float", "int8"))
    assert not os.path.exists(run.export_dir)
