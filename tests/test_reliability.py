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
