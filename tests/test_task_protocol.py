"""Tasks are registered peers: the registry, selection, and runs of earlier versions."""

import json

import pytest

from imgrec import tasks
from imgrec.config import TrainConfig
from imgrec.errors import ImgrecError
from imgrec.run_folder import RunFolder
from imgrec.tasks import base
from imgrec.tasks import registry


def test_builtin_tasks_are_registered_peers():
  assert {"image_classification", "clip_classification"} <= set(
      tasks.list_tasks())
  image = tasks.get_task("image")
  clip = tasks.get_task("clip_classification")
  assert image.name == "image_classification" and "image" in image.aliases
  assert tasks.get_task("clip") is clip
  # Peers: neither is the other's subclass.
  assert not issubclass(clip, image) and not issubclass(image, clip)
  assert issubclass(image, base.Task) and issubclass(clip, base.Task)


def test_registering_a_name_twice_raises():
  with pytest.raises(ValueError, match="already registered"):
    registry.register_task("image_classification")(type(
        "Again", (base.Task,), {}))
  with pytest.raises(ValueError, match="already registered"):
    registry.register_task("something_new", aliases=("clip",))(type(
        "Again", (base.Task,), {}))
  assert "something_new" not in tasks.list_tasks()


def test_an_unknown_task_lists_the_known_ones():
  with pytest.raises(ImgrecError, match="image_classification"):
    tasks.get_task("segmentation")
  with pytest.raises(ImgrecError, match="Unknown task 'segmentation'"):
    tasks.for_config(TrainConfig(task="segmentation", data_dir="x"))


def test_a_saved_model_finds_its_task_by_its_input():
  assert tasks.for_input_shape((None, 32, 32, 3)).name == (
      "image_classification")
  assert tasks.for_input_shape((None, 8, 32, 32, 3)).name == (
      "clip_classification")
  with pytest.raises(ImgrecError, match="No imgrec task"):
    tasks.for_input_shape((None, 3))


def test_resolved_configs_record_the_registered_name(tmp_path):
  task = tasks.for_config(TrainConfig(data_dir=str(tmp_path), task="image"))
  assert task.config.task == "image_classification"
  assert task.noun == "images"


@pytest.mark.parametrize("recorded,expected", [
    ("auto", "image_classification"), ("image", "image_classification"),
    ("clip", "clip_classification")])
def test_runs_of_earlier_versions_read_as_their_task(tmp_path, recorded,
                                                     expected):
  # config.json as runs before the registry wrote it.
  data = TrainConfig(data_dir="d", model_dir=str(tmp_path)).to_dict()
  data["task"] = recorded
  (tmp_path / "config.json").write_text(json.dumps(data))
  run = RunFolder(tmp_path)
  assert run.read_config().task == expected
  # A rerun with the same settings resumes: the recorded name is no change.
  assert run.check_resumable(TrainConfig(data_dir="d", model_dir=str(
      tmp_path), task=expected))


def test_a_task_s_own_default_applies_only_where_the_user_gave_none():
  # epochs: 20 by default, 30 for a multi-label run; a number the user
  # gives stays, even the record's own default.
  assert tasks.for_config(TrainConfig()).config.epochs == 20
  multilabel = tasks.for_config(TrainConfig(task="multilabel")).config
  assert multilabel.epochs == 30 and type(multilabel.epochs) is int
  assert json.loads(multilabel.to_json())["recipe"]["epochs"] == 30
  for given in (20, 7):
    assert tasks.for_config(TrainConfig(task="multilabel", epochs=given)
                           ).config.epochs == given
    assert tasks.for_config(TrainConfig.from_dict(
        {"task": "multilabel", "epochs": given})).config.epochs == given
  assert tasks.for_config(TrainConfig.from_dict(
      {"task": "multilabel"})).config.epochs == 30


def test_a_given_epochs_flag_is_the_user_s_own(tmp_path):
  from absl import flags
  from imgrec.cli import flags as flags_lib
  values = flags.FlagValues()
  names = flags_lib.define_flags(TrainConfig, flag_values=values)
  values(["imgrec-train", "--task=multilabel"])
  left_out = flags_lib.config_from_flags(TrainConfig, names, values)
  assert tasks.for_config(left_out).config.epochs == 30
  values(["imgrec-train", "--task=multilabel", "--epochs=20"])
  given = flags_lib.config_from_flags(TrainConfig, names, values)
  assert tasks.for_config(given).config.epochs == 20
