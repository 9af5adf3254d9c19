"""imgrec-compare over damaged runs, and outputs a user names (issue 22, 4 and 7).

Each damaged run folder is one case a careless or hostile user made: it is
listed with its reason, the other runs are still shown, and the exit status
says some were left out. Outputs that are devices, FIFOs, `-`, one of the
inputs or an existing file are written into, refused or replaced only when
asked.
"""

import csv
import io
import json
import os
import stat
import subprocess
import sys
import threading

import pytest

from conftest import write_toy_folder
from imgrec import fileio
from imgrec.cli import compare as compare_cli
from imgrec.config import CompareConfig
from imgrec.config import ScanConfig
from imgrec.errors import ImgrecError
from imgrec.evaluation import compare
from imgrec.run_folder import RunFolder
from imgrec.tasks import data as data_tasks
from test_compare import make_run

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="mknod needs root")


def run_main(capsys, *paths, **config):
  """imgrec-compare in-process: (exit status, stdout, stderr)."""
  try:
    status = compare_cli.main(CompareConfig(**config),
                              ["imgrec-compare", *map(str, paths)])
  except SystemExit as e:
    status = e.code
  out, err = capsys.readouterr()
  return status, out, err


def set_key(path, name, key, value):
  file = os.path.join(path, name)
  data = json.load(open(file, encoding="utf-8")) if os.path.exists(
      file) else {}
  data[key] = value
  fileio.write_json(file, data)


@pytest.fixture
def good(tmp_path):
  return make_run(tmp_path / "runs" / "good", accuracy=0.9)


# --- 7: every value read from a run is checked ----------------------------------

# (file, key, value, words of the reason): the issue's cases, then the
# implausible figures it names.
DAMAGED = [
    ("report.json", "latency_ms", "fast", "latency_ms must be an object"),
    ("report.json", "accuracy", float("inf"), "finite"),
    ("report.json", "accuracy", 57.0, "accuracy must be in [0, 1]"),
    ("report.json", "accuracy", -3.0, "accuracy must be in [0, 1]"),
    ("report.json", "accuracy", "0.9", "accuracy must be a number"),
    ("report.json", "accuracy", True, "accuracy must be a number"),
    ("report.json", "ece", [0.1], "ece must be a number"),
    ("training.json", "num_params", int("9" * 301), "num_params must be in"),
    ("training.json", "num_params", 1.5, "num_params must be an integer"),
    ("training.json", "train_seconds", -1, "train_seconds must be in"),
    ("ensemble.json", "models", [1, 2, None], "models must be a list of"),
    ("ensemble.json", "models", "mlp", "models must be a list of"),
    ("config.json", "epochs", "2", "epochs"),
    ("config.json", "seed", 1.5, "seed"),
]


@pytest.mark.parametrize("name,key,value,reason", DAMAGED,
                         ids=[f"{d[1]}={str(d[2])[:8]}" for d in DAMAGED])
def test_a_damaged_value_skips_its_run_with_the_reason(
    tmp_path, good, capsys, name, key, value, reason):
  bad = make_run(tmp_path / "runs" / "bad", accuracy=0.99)
  set_key(bad, name, key, value)
  rows, skipped = compare.collect_runs([tmp_path / "runs"])
  assert [r.name for r in rows] == ["good"]
  [(path, why)] = skipped
  assert path.endswith("bad") and reason in why, why
  # The command: the table of the others, the reason in one line, status 1.
  status, out, err = run_main(capsys, good, bad)
  assert status == 1, err
  assert "| good |" in out and "| bad |" not in out
  [line] = [l for l in err.splitlines() if l.startswith("skipped:")]
  assert reason in line and "Traceback" not in err


def test_a_string_formats_in_the_export_report_skips_the_run(tmp_path, good):
  bad = make_run(tmp_path / "runs" / "bad", export_latency={"median": 1.0})
  set_key(bad, os.path.join("export", "export_report.json"), "formats",
          "float")
  rows, [(_, why)] = compare.collect_runs([good, bad])
  assert [r.name for r in rows] == ["good"]
  assert "formats must be a list" in why


def test_a_deeply_nested_report_is_damaged_not_a_recursion_error(
    tmp_path, good, capsys):
  bad = make_run(tmp_path / "runs" / "bad")
  with open(RunFolder(bad).report_path(), "w") as f:
    f.write("[" * 200_000 + "]" * 200_000)
  status, out, err = run_main(capsys, good, bad)
  assert status == 1 and "| good |" in out
  assert "report.json is damaged: nested too deeply" in err
  # The same in config.json, read by every command.
  with open(RunFolder(bad).config_path, "w") as f:
    f.write('{"epochs": ' + "[" * 200_000 + "]" * 200_000 + "}")
  _, [(_, why)] = compare.collect_runs([bad])
  assert "nested too deeply" in why


def test_a_huge_report_is_refused_before_it_is_read(tmp_path, good):
  bad = make_run(tmp_path / "runs" / "bad")
  with open(RunFolder(bad).report_path(), "wb") as f:
    f.truncate(compare.MAX_JSON_BYTES + 1)  # Sparse: nothing to parse.
  rows, [(_, why)] = compare.collect_runs([good, bad])
  assert len(rows) == 1 and "larger than 50 MB" in why


def test_a_report_that_is_a_fifo_is_refused_not_waited_on(tmp_path, good):
  bad = make_run(tmp_path / "runs" / "bad")
  os.remove(RunFolder(bad).report_path())
  os.mkfifo(RunFolder(bad).report_path())
  rows, [(_, why)] = compare.collect_runs([good, bad])
  assert len(rows) == 1 and "report.json is not a regular file" in why


def test_no_usable_run_exits_2_and_lists_each_reason(tmp_path, capsys):
  bad = make_run(tmp_path / "bad", accuracy=57.0)
  (tmp_path / "file.txt").write_text("x")
  os.symlink("loop", tmp_path / "loop")
  status, out, err = run_main(capsys, bad, tmp_path / "file.txt",
                              tmp_path / "loop")
  assert status == 2 and out == ""
  assert f"skipped: {tmp_path / 'file.txt'}: not a folder" in err
  assert f"skipped: {tmp_path / 'loop'}: a symlink loop" in err
  assert "accuracy must be in [0, 1]" in err
  assert err.strip().splitlines()[-1].endswith(
      "No finished runs among 3 folder(s): each needs config.json and "
      "report.json (imgrec-train writes them).")


def test_no_folders_at_all_fails_in_one_line(capsys):
  status, out, err = run_main(capsys)
  assert status == 2 and out == "" and "Give run folders" in err


def test_a_folder_name_with_a_newline_is_listed_on_one_line(tmp_path, good,
                                                           capsys):
  odd = tmp_path / "two\nlines"
  odd.mkdir()
  status, _, err = run_main(capsys, good, odd)
  assert status == 1
  [line] = [l for l in err.splitlines() if l.startswith("skipped:")]
  assert "two\\nlines" in line


def test_csv_cells_that_start_a_formula_are_escaped(tmp_path):
  for name, data in (("=HYPERLINK(1)", "+cmd"), ("@SUM(1)", "-2+3"),
                     ("\tx", "\rx"), ("plain", "data")):
    make_run(tmp_path / "runs" / name, data_dir=str(tmp_path / data),
             seed=-1)
  rows, skipped = compare.collect_runs([tmp_path / "runs"], sort="name")
  assert not skipped
  table = list(csv.DictReader(io.StringIO(compare.format_csv(rows))))
  cells = {(r["name"], r["data"]) for r in table}
  assert cells == {("'=HYPERLINK(1)", "'+cmd"), ("'@SUM(1)", "'-2+3"),
                   ("'\tx", "'\rx"), ("plain", "data")}
  assert all(not r["path"].startswith(("=", "+", "-", "@")) for r in table)
  assert {r["seed"] for r in table} == {"-1"}  # A number stays a number.


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--format=xml", "--format=", "--sort=bogus",
                                  "--sort=Name"])
def test_odd_format_and_sort_values_fail_in_one_line(good, flag):
  proc = subprocess.run(
      [sys.executable, "-m", "imgrec.cli.compare", flag, good],
      capture_output=True, text=True, env=ENV, timeout=120)
  assert proc.returncode == 2 and proc.stdout == ""
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "error:" in lines[0], proc.stderr


def test_odd_values_in_the_python_api_are_refused():
  with pytest.raises(ImgrecError, match="format"):
    CompareConfig(format="xml").validate()
  with pytest.raises(ImgrecError, match="sort"):
    CompareConfig(sort=1)


@pytest.mark.slow
def test_cli_prints_the_table_of_the_good_runs_and_exits_1(tmp_path, good):
  bad = make_run(tmp_path / "runs" / "bad")
  set_key(bad, "report.json", "latency_ms", "fast")
  proc = subprocess.run(
      [sys.executable, "-m", "imgrec.cli.compare", good, bad],
      capture_output=True, text=True, env=ENV, timeout=120)
  assert proc.returncode == 1, proc.stderr
  assert "| good |" in proc.stdout and "Traceback" not in proc.stderr
  assert f"skipped: {bad}: report.json: latency_ms must be" in proc.stderr


# --- 4: outputs that are devices, FIFOs, `-`, inputs or existing files ----------


@needs_root
def test_compare_writes_into_a_device_and_leaves_it_a_device(tmp_path, good,
                                                             capsys):
  node = tmp_path / "devtest" / "n"
  node.parent.mkdir()
  os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # /dev/null's.
  status, out, _ = run_main(capsys, good, output=str(node))
  assert status == 0 and "| good |" in out
  assert stat.S_ISCHR(os.lstat(node).st_mode)
  assert os.listdir(node.parent) == ["n"]  # No temporary left beside it.


def read_fifo_in_thread(path):
  got = []
  thread = threading.Thread(
      target=lambda: got.append(open(path, encoding="utf-8").read()))
  thread.start()
  return thread, got


def test_compare_writes_into_a_fifo(tmp_path, good, capsys):
  fifo = tmp_path / "table.fifo"
  os.mkfifo(fifo)
  thread, got = read_fifo_in_thread(fifo)
  status, out, _ = run_main(capsys, good, output=str(fifo), format="csv")
  thread.join(30)
  assert status == 0 and got == [out]
  assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_compare_output_dash_is_stdout_once(good, tmp_path, capsys,
                                             monkeypatch):
  monkeypatch.chdir(tmp_path)
  status, out, _ = run_main(capsys, good, output="-")
  assert status == 0 and out.count("| good |") == 1
  assert not os.path.exists(tmp_path / "-")


@pytest.mark.parametrize("overwrite", [False, True])
def test_compare_refuses_an_output_that_is_one_of_its_inputs(good, capsys,
                                                             overwrite):
  report = RunFolder(good).report_path()
  before = open(report, encoding="utf-8").read()
  with pytest.raises(ImgrecError, match="is also an input"):
    run_main(capsys, good, output=report, overwrite=overwrite)
  assert open(report, encoding="utf-8").read() == before
  # Named through the folder of runs, too.
  with pytest.raises(ImgrecError, match="is also an input"):
    run_main(capsys, os.path.dirname(good),
             output=RunFolder(good).config_path, overwrite=overwrite)


def test_compare_replaces_an_existing_file_only_with_overwrite(
    tmp_path, good, capsys):
  out_file = tmp_path / "notes.md"
  out_file.write_text("my notes\n")
  with pytest.raises(ImgrecError, match="exists. Pass --overwrite"):
    run_main(capsys, good, output=str(out_file))
  assert out_file.read_text() == "my notes\n"
  status, out, _ = run_main(capsys, good, output=str(out_file),
                            overwrite=True)
  assert status == 0 and out_file.read_text() == out


@pytest.mark.slow
@needs_root
def test_cli_compare_output_to_a_device_as_the_issue_ran_it(tmp_path, good):
  node = tmp_path / "devtest" / "n"
  node.parent.mkdir()
  os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
  proc = subprocess.run(
      [sys.executable, "-m", "imgrec.cli.compare", f"--output={node}", good],
      capture_output=True, text=True, env=ENV, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert stat.S_ISCHR(os.lstat(node).st_mode)


# imgrec-scan --report


@pytest.fixture
def toy(tmp_path):
  return write_toy_folder(tmp_path / "toy", per_class=4)


def scan(toy, tmp_path, **config):
  return data_tasks.scan_data(ScanConfig(
      data_dir=toy, prepared_dir=str(tmp_path / "prepared"), progress=False,
      **config))


@needs_root
def test_scan_writes_its_report_into_a_device(toy, tmp_path):
  node = tmp_path / "devtest" / "n"
  node.parent.mkdir()
  os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
  scan(toy, tmp_path, report=str(node))
  assert stat.S_ISCHR(os.lstat(node).st_mode)
  assert os.listdir(node.parent) == ["n"]


def test_scan_writes_its_report_into_a_fifo(toy, tmp_path):
  fifo = tmp_path / "report.fifo"
  os.mkfifo(fifo)
  thread, got = read_fifo_in_thread(fifo)
  result = scan(toy, tmp_path, report=str(fifo))
  thread.join(30)
  assert json.loads(got[0])["totals"] == result["report"]["totals"]
  assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_scan_report_replaces_a_file_only_with_overwrite(toy, tmp_path):
  report = tmp_path / "scan.json"
  report.write_text("mine\n")
  with pytest.raises(ImgrecError, match="--report=.* exists. Pass "
                     "--overwrite"):
    scan(toy, tmp_path, report=str(report))
  assert report.read_text() == "mine\n"
  scan(toy, tmp_path, report=str(report), overwrite=True)
  assert json.loads(report.read_text())["totals"]["found"] == 12
  # Its default place, in imgrec's cache, is imgrec's own: no flag needed.
  scan(toy, tmp_path)
  scan(toy, tmp_path)


def test_scan_refuses_a_report_that_is_one_of_the_images(toy, tmp_path):
  image = os.path.join(toy, "red", "000.png")
  before = open(image, "rb").read()
  with pytest.raises(ImgrecError, match="is also an input"):
    scan(toy, tmp_path, report=image, overwrite=True)
  assert open(image, "rb").read() == before


@pytest.mark.slow
def test_cli_scan_report_dash_is_json_on_stdout(toy, tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "imgrec.cli.scan", f"--data_dir={toy}",
       f"--prepared_dir={tmp_path / 'prepared'}", "--report=-"],
      capture_output=True, text=True, env=ENV, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert json.loads(proc.stdout)["totals"]["found"] == 12
  assert "report: -" in proc.stderr
