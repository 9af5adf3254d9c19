"""The one helper that writes what a user named: replace files, write into devices, refuse inputs."""

import os
import subprocess
import sys
import threading

import pytest

from imgrec import fileio
from imgrec.errors import ImgrecError


def test_a_symlink_is_written_through(tmp_path):
  shared = tmp_path / "shared"
  shared.mkdir()
  target = shared / "gallery.json"
  target.write_text("old")
  link = tmp_path / "g.json"
  os.symlink(target, link)
  fileio.write_text(str(link), "new")
  assert os.path.islink(link)
  assert target.read_text() == "new"
  assert sorted(os.listdir(tmp_path)) == ["g.json", "shared"]
  assert os.listdir(shared) == ["gallery.json"]


def test_a_dangling_symlink_creates_its_target(tmp_path):
  link = tmp_path / "out.json"
  os.symlink(tmp_path / "real.json", link)
  fileio.write_json(str(link), {"a": 1})
  assert os.path.islink(link)
  assert (tmp_path / "real.json").read_text() == '{"a": 1}\n'


def test_a_fifo_is_written_into_not_replaced(tmp_path):
  fifo = str(tmp_path / "pipe")
  os.mkfifo(fifo)
  got = []
  reader = threading.Thread(
      target=lambda: got.append(open(fifo, encoding="utf-8").read()))
  reader.start()
  fileio.write_text(fifo, "through the pipe\n")
  reader.join(10)
  assert got == ["through the pipe\n"]
  assert fileio.is_special(fifo)
  assert os.listdir(tmp_path) == ["pipe"]


def test_dev_null_stays_a_device():
  fileio.write_json(os.devnull, {"x": 1})
  assert fileio.is_special(os.devnull)
  with pytest.raises(ImgrecError, match="not a regular file"):
    with fileio.atomic_path(os.devnull):
      pass


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_device_node_keeps_its_kind(tmp_path):
  node = str(tmp_path / "n")
  os.mknod(node, 0o666 | 0o020000, os.makedev(1, 3))  # A copy of /dev/null.
  fileio.write_text(node, "x" * 343)
  assert fileio.is_special(node)


def test_check_output_refuses_an_input_by_any_name(tmp_path):
  source = tmp_path / "self.mp4"
  source.write_bytes(b"video")
  os.symlink(source, tmp_path / "alias.mp4")
  for name in ("self.mp4", "alias.mp4"):
    with pytest.raises(ImgrecError, match="is also an input"):
      fileio.check_output(str(tmp_path / name), flag="--out",
                          inputs=[str(source)], overwrite=True)
  assert source.read_bytes() == b"video"


def test_check_output_replaces_only_when_asked(tmp_path):
  out = tmp_path / "out.csv"
  fileio.check_output(str(out), flag="--output")  # New: fine.
  out.write_text("mine")
  with pytest.raises(ImgrecError, match="exists. Pass --overwrite"):
    fileio.check_output(str(out), flag="--output")
  fileio.check_output(str(out), flag="--output", overwrite=True)
  with pytest.raises(ImgrecError, match="is a folder"):
    fileio.check_output(str(tmp_path), flag="--output", overwrite=True)
  fileio.check_output("-", flag="--output")
  fileio.check_output(os.devnull, flag="--output")


def test_open_output_dash_is_stdout(tmp_path):
  code = ("from imgrec import fileio\n"
          "with fileio.open_output('-') as f:\n  f.write('to stdout')\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, cwd=tmp_path, check=True)
  assert proc.stdout == "to stdout"
  assert os.listdir(tmp_path) == []


def test_temporaries_have_a_name_no_user_file_has(tmp_path):
  with fileio.atomic_path(str(tmp_path / "a.json")) as tmp:
    assert os.path.basename(tmp).startswith(".imgrec-tmp-")
    open(tmp, "w").close()
  assert os.listdir(tmp_path) == ["a.json"]


def test_locked_makes_two_writers_take_turns(tmp_path):
  path = str(tmp_path / "g.json")
  fileio.write_json(path, [])
  code = ("import json, sys, time\nfrom imgrec import fileio\n"
          "with fileio.locked(sys.argv[1]):\n"
          "  data = json.load(open(sys.argv[1]))\n  time.sleep(0.3)\n"
          "  fileio.write_json(sys.argv[1], data + [sys.argv[2]])\n")
  procs = [subprocess.Popen([sys.executable, "-c", code, path, name])
           for name in ("s4", "s5")]
  assert [p.wait(60) for p in procs] == [0, 0]
  with open(path, encoding="utf-8") as f:
    assert sorted(__import__("json").load(f)) == ["s4", "s5"]
