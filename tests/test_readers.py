"""One reader for each thing: a run's history, video frames, frame folders.

Issue 21, points 6 to 8: history.csv is read by `RunFolder` only, video is
decoded by `imgrec.data.video` only (clips for training and streams alike),
and choice lists live in `imgrec.config`.
"""

import math

import pytest

from imgrec.run_folder import RunFolder

# As Keras' CSVLogger writes it: \r\n line ends, epochs from 0.
_HISTORY = ("epoch,loss,val_eer\r\n"
            "0,1.5,0.40\r\n"
            "1,1.2,0.30\r\n"
            "2,1.0,nan\r\n")


def _write(run, text):
  with open(run.history_path, "w", encoding="utf-8", newline="") as f:
    f.write(text)


def test_history_is_typed_columns_by_epoch(tmp_path):
  run = RunFolder(str(tmp_path))
  assert run.read_history() is None  # No file yet.
  _write(run, _HISTORY)
  history = run.read_history()
  assert history.epochs == (0, 1, 2) and len(history) == 3
  assert history.column("loss") == (1.5, 1.2, 1.0)
  assert history.column("val_eer")[:2] == (0.40, 0.30)
  assert math.isnan(history.column("val_eer")[2])
  assert history.column("val_accuracy") == ()  # Not logged.
  assert "epoch" not in history.columns


def test_history_skips_what_a_kill_or_a_resume_left(tmp_path):
  run = RunFolder(str(tmp_path))
  _write(run, _HISTORY
         + "1,0.9,0.20\r\n"  # Epoch 1 run again after a resume: it wins.
         + "epoch,loss,val_eer\r\n"  # A second header.
         + "x,1,2\r\n"  # Not an epoch.
         + "3,0.8\r\n"  # Fields missing.
         + "4,0.7,0.1")  # Cut short by a kill: no line end.
  history = run.read_history()
  assert history.epochs == (0, 1, 2)
  assert history.column("loss") == (1.5, 0.9, 1.0)


@pytest.mark.parametrize("text", ["", "epoch,loss", "epoch,loss\r\n",
                                  "epoch,loss\r\nx,1\r\n"])
def test_history_without_rows_is_none(tmp_path, text):
  run = RunFolder(str(tmp_path))
  _write(run, text)
  assert run.read_history() is None


def test_truncated_history_reads_as_the_epochs_the_backup_holds(tmp_path):
  run = RunFolder(str(tmp_path))
  _write(run, _HISTORY + "3,0.5,0.1\r\n4,0.")
  assert run.truncate_history(2) == 2
  assert run.read_history().epochs == (0, 1)
  with open(run.history_path, encoding="utf-8", newline="") as f:
    assert f.read() == "epoch,loss,val_eer\r\n0,1.5,0.40\r\n1,1.2,0.30\r\n"
  _write(run, "epoch,lo")  # A header cut short: the file goes.
  assert run.truncate_history(2) == 0
  assert run.read_history() is None
