"""Third reliability round, the small things a person notices: quiet starts, honest tables and times.

Issue 22, items 14 (export table, scan time, reliability.png, symlinked
class folders) and 15 (TensorFlow's start-up lines, Keras' bar in logs).
"""

import concurrent.futures
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import write_toy_folder
from imgrec.evaluation import pictures
from imgrec.export import measure

ENV_LOUD = {k: v for k, v in os.environ.items()
            if k not in ("TF_CPP_MIN_LOG_LEVEL",)}
ENV_LOUD["CUDA_VISIBLE_DEVICES"] = ""
CHATTER = ("absl::InitializeLog", "cudart_stub", "Could not find cuda",
           "oneDNN", "cuda_", "computation placer", "E0000", "W0000",
           "I0000", "Sharding callback", "Writing fingerprint")


def _capture_figures(monkeypatch):
  figures = []
  real = pictures._png  # pylint: disable=protected-access
  monkeypatch.setattr(pictures, "_png",
                      lambda figure: figures.append(figure) or real(figure))
  return figures


def test_after_temperature_curve_has_gaps_at_empty_bins(monkeypatch):
  def bins(counts, accuracy):
    return [{"lower": i / 5, "upper": (i + 1) / 5, "count": c,
             "confidence": (i + 0.5) / 5 if c else None,
             "accuracy": accuracy if c else None}
            for i, c in enumerate(counts)]
  report = {"reliability": bins([0, 3, 0, 4, 5], 0.5), "ece": 0.1,
            "reliability_after_temperature": bins([2, 0, 6, 0, 4], 0.8),
            "temperature": 1.5, "ece_after_temperature": 0.05}
  figures = _capture_figures(monkeypatch)
  pictures.reliability_png(report)
  top = figures[0].axes[0]
  (after,) = [l for l in top.get_lines() if "after" in l.get_label()]
  y = np.asarray(after.get_ydata(), float)
  # Bins 1 and 3 hold no example: gaps (NaN), never a point at 0, and so
  # no segment is drawn across them.
  assert np.isnan(y[[1, 3]]).all()
  assert np.allclose(y[[0, 2, 4]], 0.8)


def test_export_table_says_latency_was_not_measured():
  report = {"reference": {"accuracy": 0.5, "num_examples": 4},
            "formats": [{"name": "float", "bytes": 2048, "accuracy": 0.5,
                         "top1_agreement": 1.0, "max_abs_prob_diff": 0.0,
                         "latency_ms": None, "images_per_second": 900.0}]}
  text = measure.format_report(report)
  assert "nan" not in text
  row = [l for l in text.splitlines() if l.startswith("float")][0]
  assert row.split()[-3:] == ["-", "-", "900"]
  assert "not measured" in text
  report["formats"][0]["latency_ms"] = {"median": 1.25, "p90": 2.5}
  text = measure.format_report(report)
  assert "1.250" in text and "2.500" in text and "not measured" not in text


def _run(*args, cwd, env=None):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True,
                        text=True, cwd=cwd, env=env or ENV_LOUD, timeout=600)


def _assert_quiet(proc, prog):
  assert not any(c in proc.stderr for c in CHATTER), proc.stderr[-3000:]
  for line in proc.stderr.splitlines():
    assert line.startswith(("imgrec: ", f"{prog}: ", "imgrec-")), (
        line, proc.stderr[-3000:])


@pytest.mark.slow  # Starts TensorFlow in a fresh process.
def test_scan_starts_tensorflow_quietly_and_times_the_scan_alone(tmp_path):
  # A cold scan imports TensorFlow half way (to decode), not up front: its
  # start-up lines must not reach the terminal, and its seconds are not
  # scan seconds.
  data = write_toy_folder(tmp_path / "data", per_class=6)
  env = dict(ENV_LOUD, XDG_CACHE_HOME=str(tmp_path / "cache"))
  report = tmp_path / "scan.json"
  proc = _run("imgrec.cli.scan", f"--data_dir={data}", f"--report={report}",
              cwd=tmp_path, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  _assert_quiet(proc, "imgrec-scan")
  with open(report, encoding="utf-8") as f:
    scan = json.load(f)["scan"]
  assert scan["tensorflow_start_seconds"] > 0.5  # It did start TensorFlow.
  assert scan["seconds"] < scan["tensorflow_start_seconds"]
  assert "after TensorFlow's start-up" in proc.stdout


@pytest.mark.slow  # Starts TensorFlow in a fresh process per command.
def test_every_command_is_quiet_without_tf_cpp_min_log_level(tmp_path):
  # Nothing in the environment hushes TensorFlow here (tox sets
  # TF_CPP_MIN_LOG_LEVEL; a user's shell does not): stderr holds imgrec's
  # own lines only, on the commands a new user runs first. (imgrec-train's
  # own lines: test_reliability's test_a_run_prints_imgrec_lines_...)
  from imgrec.config import TrainConfig  # pylint: disable=g-import-not-at-top
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  assert "TF_CPP_MIN_LOG_LEVEL" not in ENV_LOUD
  data = write_toy_folder(tmp_path / "data", per_class=6)
  run = tmp_path / "run"
  trainer.train(TrainConfig(data_dir=data, model_dir=str(run), epochs=1,
                            image_size=16, batch_size=8, verbose=0))
  env = dict(ENV_LOUD, XDG_CACHE_HOME=str(tmp_path / "cache"))
  image = os.path.join(data, "red", "000.png")
  commands = (("imgrec.cli.predict", f"--model={run}/export/model.tflite",
                image),
               ("imgrec.cli.predict", f"--model={run}", image),
               ("imgrec.cli.evaluate", f"--model_dir={run}",
                "--nopictures"),
               ("imgrec.cli.scan", f"--data_dir={data}"),
               ("imgrec.cli.stream", f"--model={run}/export/model.tflite",
                os.path.join(data, "red")),
               ("imgrec.cli.compare", str(run)))
  # Two at a time: most of each is TensorFlow's single-threaded start-up.
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    procs = list(pool.map(lambda args: _run(*args, cwd=tmp_path, env=env),
                          commands))
  for args, proc in zip(commands, procs):
    assert proc.returncode == 0, (args, proc.stderr[-3000:])
    _assert_quiet(proc, "imgrec-" + args[0].rsplit(".", 1)[-1])


def test_a_class_folder_linked_to_another_class_is_named(tmp_path):
  from imgrec.data import folder as folder_lib  # pylint: disable=g-import-not-at-top
  from imgrec.errors import ImgrecError  # pylint: disable=g-import-not-at-top
  data = write_toy_folder(tmp_path / "data", per_class=6)
  green = os.path.join(data, "green")
  for name in os.listdir(green):
    os.remove(os.path.join(green, name))
  os.rmdir(green)
  os.symlink(os.path.join(data, "red"), green)
  # Before: green sorted first and took red's files, and the error said
  # red had no images.
  with pytest.raises(ImgrecError, match=r"green links to class 'red'"):
    folder_lib.find_images(data, val_split=0.2, test_split=0.2)


def test_a_linked_class_folder_does_not_take_a_real_one_s_files(tmp_path):
  from imgrec.data import folder as folder_lib  # pylint: disable=g-import-not-at-top
  data = write_toy_folder(tmp_path / "data", per_class=6)
  elsewhere = write_toy_folder(tmp_path / "more", per_class=4,
                               classes=["green"], seed=1)
  os.rename(os.path.join(data, "blue"), os.path.join(elsewhere, "blue"))
  # "blue" is a link that sorts before "red", and holds a link to one of
  # red's files: that file stays red's.
  os.symlink(os.path.join(elsewhere, "blue"), os.path.join(data, "blue"))
  os.symlink(os.path.join(data, "red", "000.png"),
             os.path.join(elsewhere, "blue", "zz.png"))
  found = folder_lib.find_images(data, val_split=0.2, test_split=0.2,
                                 allow_outside=True)
  red = found.class_names.index("red")
  red_paths = [p for s in found.splits.values()
               for p, l in zip(s.paths, s.labels) if l == red]
  assert os.path.join(data, "red", "000.png") in red_paths
  assert len(red_paths) == 6
