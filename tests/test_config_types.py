"""Config records check their types when built; the Python API takes a record or a dict (issue 22, 8).

A wrong type fails with the field's name before anything is written; the
configs that runs wrote (JSON: ints for whole floats, lists for tuples)
and the configs the command-line flags build still load.
"""

import json
import os
import pathlib

import numpy as np
import pytest
from absl import flags

import imgrec
from conftest import write_toy_folder
from imgrec import config as config_lib
from imgrec.cli import flags as flags_lib
from imgrec.config import TrainConfig
from imgrec.errors import ImgrecError


def all_records(cls=config_lib.Config):
  out = []
  for sub in cls.__subclasses__():
    out += [sub] + all_records(sub)
  return out


RECORDS = all_records()


# --- The cases -----------------------------------------------------------


@pytest.mark.parametrize("field,value", [
    ("epochs", 1.5), ("epochs", "2"), ("val_split", "0.2"), ("epochs", True),
    ("learning_rate", True), ("model_dir", 5), ("image_size", "64"),
    ("augment", None), ("overwrite", 1)])
def test_a_wrong_type_is_refused_naming_the_field(field, value):
  with pytest.raises(ImgrecError, match=f"TrainConfig.{field}: expected") as e:
    TrainConfig(**{field: value})
  assert f"Received: {field}={value!r}" in str(e.value)


def test_train_with_a_fractional_epoch_writes_nothing(tmp_path):
  data = write_toy_folder(tmp_path / "data", per_class=4)
  model_dir = tmp_path / "run"
  with pytest.raises(ImgrecError, match="TrainConfig.epochs"):
    imgrec.train(TrainConfig(epochs=1.5, data_dir=data,
                             model_dir=str(model_dir)))
  # The same as a dict: built, so checked, before train starts.
  with pytest.raises(ImgrecError, match="TrainConfig.epochs"):
    imgrec.train({"epochs": 1.5, "data_dir": data,
                  "model_dir": str(model_dir)})
  assert not model_dir.exists()


@pytest.mark.parametrize("api,record", [
    ("train", "TrainConfig"), ("evaluate", "EvaluateConfig"),
    ("export", "ExportConfig"), ("scan", "ScanConfig")])
def test_the_api_refuses_what_is_not_a_config(api, record):
  for wrong in (["--epochs=1"], "config.json", 3, TrainConfig()
                if record != "TrainConfig" else config_lib.ScanConfig()):
    with pytest.raises(ImgrecError, match=f"{api}\\(\\) takes an "
                       f"imgrec.{record} \\(or a dict of its fields\\)"):
      getattr(imgrec, api)(wrong)


def test_imgrec_export_stays_a_function_once_its_package_is_imported():
  """README's path: train (whose export imports imgrec/export/), then export."""
  import imgrec.export.exporter  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  assert callable(imgrec.export) and callable(imgrec.train)
  with pytest.raises(ImgrecError, match="export\\(\\) takes an"):
    imgrec.export(None)


@pytest.mark.parametrize("api", ["train", "evaluate", "export", "scan"])
def test_the_api_refuses_a_dict_with_an_unknown_key(api):
  with pytest.raises(ImgrecError, match="Unknown configuration key.*epoch"):
    getattr(imgrec, api)({"epoch": 1})


def test_the_api_takes_a_dict_of_fields(tmp_path):
  data = write_toy_folder(tmp_path / "data", per_class=4)
  result = imgrec.scan({"data_dir": data, "progress": False,
                        "prepared_dir": str(tmp_path / "prepared")})
  assert result["report"]["totals"]["usable"] == 12
  # evaluate and export get past the record to the run itself.
  for api in (imgrec.evaluate, imgrec.export):
    with pytest.raises(ImgrecError, match="finished imgrec-train run"):
      api({"model_dir": str(tmp_path / "no-run")})


@pytest.mark.slow
def test_train_takes_a_dict(tmp_path):
  data = write_toy_folder(tmp_path / "data", per_class=6)
  result = imgrec.train({"data_dir": data, "model_dir": str(tmp_path / "r"),
                         "epochs": 1, "batch_size": 8, "image_size": 24,
                         "export": False, "verbose": 0})
  assert result["model_dir"] == str(tmp_path / "r")
  assert TrainConfig.from_json(
      (tmp_path / "r" / "config.json").read_text()).epochs == 1


# --- Every field of every record -------------------------------------------------

WRONG = [True, 1.5, "x", 7, [1], {"a": 1}, object()]


def accepted(value, kinds):
  """Whether a field of `kinds` takes `value` (the rules the issue set)."""
  if isinstance(value, bool):
    return bool in kinds
  if isinstance(value, int):
    return int in kinds or float in kinds
  if isinstance(value, float):
    return float in kinds
  if isinstance(value, str):
    return str in kinds
  if isinstance(value, list):
    return tuple in kinds
  return False


FIELDS = [(cls, name, kinds) for cls in RECORDS
          for name, kinds in config_lib._field_types(cls).items()]  # pylint: disable=protected-access


@pytest.mark.parametrize("cls,name,kinds", FIELDS,
                         ids=[f"{c.__name__}.{n}" for c, n, _ in FIELDS])
def test_every_field_refuses_every_wrong_type(cls, name, kinds):
  for value in WRONG:
    if accepted(value, kinds):
      cls(**{name: value})
    else:
      with pytest.raises(ImgrecError, match=f"{cls.__name__}.{name}"):
        cls(**{name: value})


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_defaults_build_and_round_trip_through_json(cls):
  record = cls()
  assert cls.from_json(record.to_json()) == record


def test_numbers_are_held_as_their_field_says():
  config = TrainConfig(learning_rate=1, epochs=np.int64(3), seed=np.int32(1),
                       image_size=[64, 48], data_dir=pathlib.Path("d"))
  assert type(config.learning_rate) is float and config.learning_rate == 1
  assert type(config.epochs) is int and type(config.seed) is int
  assert config.image_size == (64, 48)
  assert config.data_dir == "d"
  assert config_lib.ExportConfig(tflite=["float", "int8"]).tflite == (
      "float", "int8")
  # Replacing a field checks it too.
  with pytest.raises(ImgrecError, match="TrainConfig.epochs"):
    config.replace(epochs="3")


def test_huge_and_deep_values_give_a_short_message():
  deep = []
  for _ in range(5000):
    deep = [deep]
  for value in (deep, "x" * 10_000):
    with pytest.raises(ImgrecError) as e:
      TrainConfig(epochs=value)
    assert len(str(e.value)) < 200
  with pytest.raises(ImgrecError, match="--epochs") as e:
    TrainConfig(epochs=-int("9" * 301)).validate(check_files=False)
  assert len(str(e.value)) < 200
  with pytest.raises(ImgrecError, match="nested too deeply"):
    TrainConfig.from_json('{"epochs": ' + "[" * 100_000 + "]" * 100_000 + "}")


def test_config_json_as_runs_wrote_it_still_loads(tmp_path):
  """JSON keeps a whole float as an int and a tuple as a list."""
  # Flat, as runs before the sections wrote it.
  written = TrainConfig(image_size=(64, 48)).to_dict()
  assert written["image_size"] == [64, 48]
  written.update(learning_rate=1, warmup_epochs=0, val_split=0,
                 dropout=None, verbose=2)
  config = TrainConfig.from_json(json.dumps(written))
  assert config.image_size == (64, 48) and config.learning_rate == 1.0
  assert config.validate(check_files=False) is config
  # Nested by section, as runs write it now; the same record comes back.
  nested = json.loads(config.to_json())
  assert nested["model"]["image_size"] == [64, 48]
  assert nested["recipe"]["learning_rate"] == 1.0
  assert nested["data"]["val_split"] == 0 and nested["task"] == "auto"
  assert TrainConfig.from_json(json.dumps(nested)) == config
  nested["epochs"] = 3  # Also at the top: given twice.
  with pytest.raises(ImgrecError, match="'epochs' is given twice"):
    TrainConfig.from_dict(nested)
  # A run folder's config.json, read as every command reads it.
  run = imgrec.RunFolder(tmp_path / "run")
  os.makedirs(run.path)
  (tmp_path / "run" / "config.json").write_text(json.dumps(written))
  # (A run recorded its task; "auto" is what runs before clips recorded.)
  assert run.read_config() == config.replace(task="image_classification")


def test_a_config_json_with_a_wrong_type_names_the_field(tmp_path):
  text = TrainConfig().to_json().replace('"epochs": 20', '"epochs": "20"')
  with pytest.raises(ImgrecError, match="TrainConfig.epochs"):
    TrainConfig.from_json(text)


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_flags_build_every_record(cls):
  """Each command's flags (their defaults and given values) build its record."""
  values = flags.FlagValues()
  names = flags_lib.define_flags(cls, flag_values=values)
  values(["prog"])
  assert flags_lib.config_from_flags(cls, names, values) == cls()
  hints = config_lib._field_types(cls)  # pylint: disable=protected-access
  given = [n for n in names if hints[n] in ((float,), (int,))][:3]
  values = flags.FlagValues()
  flags_lib.define_flags(cls, flag_values=values)
  values(["prog"] + [f"--{n}=1" for n in given])
  record = flags_lib.config_from_flags(cls, names, values)
  assert all(getattr(record, n) == 1 for n in given)
