"""imgrec-compare on run folders written by hand (nothing is trained)."""

import csv
import io
import os
import subprocess
import sys

import pytest

from imgrec import fileio
from imgrec.config import CompareConfig
from imgrec.config import TrainConfig
from imgrec.evaluation import compare
from imgrec.run_folder import RunFolder

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")


def make_run(path, *, model="simple_cnn", accuracy=0.9, macro_f1=0.88,
             ece=None, latency=None, training=True, export_latency=None,
             report=True, **config):
  """Writes a finished run's config.json, report.json and training.json."""
  run = RunFolder(path)
  run.write_config(TrainConfig(model=model, model_dir=str(path), **config))
  if report:
    values = {"accuracy": accuracy, "macro_f1": macro_f1}
    if ece is not None:
      values["ece"] = ece
    if latency is not None:
      values["latency_ms"] = {"median": latency, "p90": 2 * latency}
    run.write_report(values, "report\n")
  if training:
    run.write_training({"train_seconds": 12.5, "epochs": 3,
                        "num_params": 12345})
  if export_latency is not None:
    formats = [{"name": "saved_model", "latency_ms": {"median": 9.0}},
               {"name": "float", "latency_ms": export_latency}]
    fileio.write_json(run.export_report_path, {"formats": formats})
  return str(path)


@pytest.fixture
def runs(tmp_path):
  """Three finished runs under runs/ and two folders that are not runs."""
  root = tmp_path / "runs"
  make_run(root / "mnist-mlp", model="mlp", accuracy=0.95, ece=0.031,
           latency=0.42, data_dir=str(tmp_path / "mnist-10k"), seed=7)
  make_run(root / "mnist-cnn", accuracy=0.99, training=False,
           export_latency={"median": 1.5, "p90": 2.0},
           data_dir=str(tmp_path / "mnist-10k"))
  make_run(root / "shapes-vit", model="vit_tiny", accuracy=0.5)
  make_run(root / "unfinished", report=False)
  os.makedirs(root / "logs")
  return root


def run_cli(*args, cwd=None):
  return subprocess.run([sys.executable, "-m", "imgrec.cli.compare", *args],
                        capture_output=True, text=True, env=ENV, cwd=cwd,
                        timeout=120)


def test_collect_runs_reads_every_figure_and_sorts_best_first(runs):
  rows, skipped = compare.collect_runs([runs])
  assert [r.name for r in rows] == ["mnist-cnn", "mnist-mlp", "shapes-vit"]
  mlp = rows[1]
  assert (mlp.data, mlp.model, mlp.seed, mlp.epochs) == (
      "mnist-10k", "mlp", 7, 20)
  assert (mlp.accuracy, mlp.macro_f1, mlp.ece) == (0.95, 0.88, 0.031)
  assert (mlp.num_params, mlp.train_seconds) == (12345, 12.5)
  assert (mlp.latency_ms, mlp.latency_source) == (0.42, "keras")
  cnn = rows[0]
  assert (cnn.num_params, cnn.train_seconds, cnn.ece) == (None, None, None)
  assert (cnn.latency_ms, cnn.latency_source) == (1.5, "tflite")
  assert rows[2].data == "shapes" and rows[2].latency_ms is None
  # logs/ has no config.json: not a run, so silently not one of the runs.
  assert [(os.path.basename(p), "no report.json" in why)
          for p, why in skipped] == [("unfinished", True)]


def test_sort_by_name_and_each_folder_once(runs):
  rows, _ = compare.collect_runs([runs / "shapes-vit", runs], sort="name")
  assert [r.name for r in rows] == ["mnist-cnn", "mnist-mlp", "shapes-vit"]


def test_a_null_tflite_latency_is_not_a_figure(tmp_path):
  make_run(tmp_path / "r")
  fileio.write_json(RunFolder(tmp_path / "r").export_report_path,
                    {"formats": [{"name": "float", "latency_ms": None}]})
  (row,), _ = compare.collect_runs([tmp_path / "r"])
  assert (row.latency_ms, row.latency_source) == (None, None)


def test_folders_that_are_not_runs_are_skipped_with_a_reason(tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "file.txt").write_text("x")
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / os.path.basename(RunFolder(bad).config_path)).write_text("{oops")
  rows, skipped = compare.collect_runs(
      [tmp_path / "empty", tmp_path / "file.txt", tmp_path / "missing", bad])
  assert rows == []
  reasons = {os.path.basename(p): why for p, why in skipped}
  assert "no config.json" in reasons["empty"]
  assert reasons["file.txt"] == "not a folder"
  assert reasons["missing"] == "no such folder"
  assert "not valid JSON" in reasons["bad"]


def test_markdown_table(runs):
  rows, _ = compare.collect_runs([runs])
  lines = compare.format_markdown(rows).splitlines()
  assert lines[0] == ("| run | data | model | accuracy % | macro F1 | ECE | "
                      "params | train s | latency ms |")
  assert lines[2] == ("| mnist-cnn | mnist-10k | simple_cnn | 99.00 | 0.8800 "
                      "| - | - | - | 1.50 (tflite) |")
  assert lines[3] == ("| mnist-mlp | mnist-10k | mlp | 95.00 | 0.8800 | "
                      "0.0310 | 12,345 | 12.5 | 0.42 |")
  assert lines[4].endswith("| 12.5 | - |")
  assert "(tflite)" in lines[-1]


def test_csv_parses_back(runs):
  rows, _ = compare.collect_runs([runs])
  table = list(csv.DictReader(io.StringIO(compare.format_csv(rows))))
  assert [r["name"] for r in table] == [
      "mnist-cnn", "mnist-mlp", "shapes-vit"]
  mlp = table[1]
  assert float(mlp["accuracy"]) == 0.95 and float(mlp["ece"]) == 0.031
  assert int(mlp["num_params"]) == 12345
  assert (mlp["latency_ms"], mlp["latency_source"]) == ("0.42", "keras")
  assert table[0]["ece"] == "" and table[0]["latency_source"] == "tflite"


def test_table_format_follows_the_output_name():
  assert CompareConfig().table_format() == "markdown"
  assert CompareConfig(output="t.CSV").table_format() == "csv"
  assert CompareConfig(output="t.csv", format="markdown").table_format() == (
      "markdown")


def test_cli_prints_the_table_and_writes_output(runs, tmp_path):
  out = tmp_path / "tables" / "runs.csv"
  proc = run_cli("--sort=name", f"--output={out}", str(runs / "mnist-mlp"),
                 str(runs / "unfinished"), str(runs / "mnist-cnn"))
  # A skipped folder: the table of the others, and status 1.
  assert proc.returncode == 1, proc.stderr
  assert proc.stdout == out.read_text()
  names = [r["name"] for r in csv.DictReader(io.StringIO(proc.stdout))]
  assert names == ["mnist-cnn", "mnist-mlp"]
  assert f"skipped: {runs / 'unfinished'}: no report.json" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not [n for n in os.listdir(out.parent) if n != "runs.csv"]


def test_cli_without_runs_fails_in_one_line(tmp_path):
  (tmp_path / "empty").mkdir()
  proc = run_cli(str(tmp_path / "empty"))
  assert proc.returncode == 2
  errors = [l for l in proc.stderr.splitlines() if "error" in l]
  assert len(errors) == 1 and "No finished runs" in errors[0]
  assert proc.stdout == "" and "Traceback" not in proc.stderr
  assert run_cli().returncode == 2
