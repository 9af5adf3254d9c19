"""Tests for image folder discovery and splitting."""

import os

import pytest

from imgrec import run_folder
from imgrec.data import folder
from imgrec.errors import ImgrecError
from conftest import write_toy_folder


def test_classes_sorted_hidden_and_junk_ignored(tmp_path):
  root = write_toy_folder(tmp_path / "d", per_class=5)
  os.makedirs(tmp_path / "d" / ".ipynb_checkpoints")
  (tmp_path / "d" / ".DS_Store").write_bytes(b"junk")
  (tmp_path / "d" / "red" / "notes.txt").write_text("not an image")
  (tmp_path / "d" / "red" / "Thumbs.db").write_bytes(b"junk")
  found = folder.find_images(root, val_split=0.2, test_split=0.2, seed=1)
  assert found.class_names == ["blue", "green", "red"]
  all_paths = [p for s in found.splits.values() for p in s.paths]
  assert len(all_paths) == 15
  assert not any(p.endswith((".txt", ".db")) for p in all_paths)


def test_split_is_seeded_stratified_and_disjoint(tmp_path):
  root = write_toy_folder(tmp_path / "d", per_class=20)
  a = folder.find_images(root, val_split=0.1, test_split=0.2, seed=3)
  b = folder.find_images(root, val_split=0.1, test_split=0.2, seed=3)
  c = folder.find_images(root, val_split=0.1, test_split=0.2, seed=4)
  assert a.splits == b.splits
  assert a.splits["test"].paths != c.splits["test"].paths
  summary = a.summary()
  for name in a.class_names:
    assert summary["train"][name] == 14
    assert summary["val"][name] == 2
    assert summary["test"][name] == 4
  sets = [set(s.paths) for s in a.splits.values()]
  assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_split_folders_are_used_and_validation_alias(tmp_path):
  write_toy_folder(tmp_path / "d" / "train", per_class=6)
  write_toy_folder(tmp_path / "d" / "validation", per_class=2, seed=1)
  found = folder.find_images(str(tmp_path / "d"), val_split=0.1,
                             test_split=0.5, seed=0)
  assert found.layout == "splits"
  assert len(found.splits["val"]) == 6
  assert all("validation" in p for p in found.splits["val"].paths)
  # No test folder: it is carved out of train, per class.
  assert len(found.splits["test"]) == 9
  assert len(found.splits["train"]) == 9


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "does not exist"),
    (lambda d: os.makedirs(d), "No class folders"),
    (lambda d: write_toy_folder(d, classes=["red"]), "only 1 class"),
    (lambda d: (write_toy_folder(d, classes=["red", "blue"]),
                os.makedirs(os.path.join(d, "empty"))), "no images"),
    (lambda d: write_toy_folder(os.path.join(d, "test"), per_class=2),
     "no 'train' folder"),
])
def test_bad_folders_raise_clear_errors(tmp_path, make, message):
  d = str(tmp_path / "data")
  make(d)
  with pytest.raises(ImgrecError, match=message):
    folder.find_images(d)


def test_bad_fractions(tmp_path):
  root = write_toy_folder(tmp_path / "d", per_class=3)
  with pytest.raises(ImgrecError, match="val_split"):
    folder.find_images(root, val_split=1.5)
  with pytest.raises(ImgrecError, match="below 1"):
    folder.find_images(root, val_split=0.5, test_split=0.5)


def test_labels_round_trip(tmp_path):
  path = str(tmp_path / "labels.txt")
  run_folder.write_labels_file(path, ["a b", "ü", "c"])
  assert run_folder.read_labels_file(path) == ["a b", "ü", "c"]
