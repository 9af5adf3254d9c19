r"""Test-time augmentation and ensembles against their baselines, on trained runs.

    python experiments/compare_models.py --data_dir=../shared/data/mnist-10k \
        --epochs=5 --image_size=28 --channels=1 --override=--flip=none \
        --out_dir=/tmp/cmp/mnist                      # the runs (15 of them)
    python experiments/evaluate_check.py --runs=/tmp/cmp/mnist --seed=42 \
        --ensemble=simple_cnn,resnet,row_lstm

For every run `<model>-s<seed>` under --runs: test accuracy without TTA and
with --tta=flip, crops, flip,crops (one table). Then the ensemble of the
--ensemble families of that seed (they share their splits) against each
member, with equal and validation-accuracy weights (a second table), all
through `imgrec.evaluation.evaluate` as `imgrec-evaluate` runs it.

Expected (MNIST-10k, 5 epochs, seed 42; issue 13 has the tables): on digits
a mirror image is another picture (a flipped 2 is no 2), so flip costs 2 to
7 points; crops help the weak models (mlp +2, vit_tiny +5 points) and are
neutral for the CNNs. An ensemble of the three best families is within one
image of its best member; one of weaker, different families beats each of
its members.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from imgrec.config import EvaluateConfig  # pylint: disable=g-import-not-at-top
from imgrec.evaluation import evaluate as evaluate_lib

_RUNS = flags.DEFINE_string("runs", None, "Folder of <model>-s<seed> runs.",
                            required=True)
_SEED = flags.DEFINE_integer("seed", 42, "The seed whose runs to use.")
_TTA = flags.DEFINE_multi_string(
    "tta", ["flip", "crops", "flip,crops"],
    "TTA modes to compare with none; repeat the flag for several.")
_TABLES = flags.DEFINE_list("tables", ["tta", "ensemble"],
                            "Tables to measure: tta, ensemble.")
_ENSEMBLE = flags.DEFINE_list("ensemble", ["simple_cnn", "resnet", "row_lstm"],
                              "Model families of the ensemble.")


def _runs_of_seed(root, seed):
  suffix = f"-s{seed}"
  return {name[:-len(suffix)]: os.path.join(root, name)
          for name in sorted(os.listdir(root))
          if name.endswith(suffix) and os.path.isfile(
              os.path.join(root, name, "report.json"))}


def _evaluate(model_dir, **kwargs):
  return evaluate_lib.evaluate(EvaluateConfig(model_dir=model_dir, **kwargs),
                               write=False)


def tta_table(runs, modes):
  lines = ["| model | none | " + " | ".join(modes) + " |",
           "| --- | --- | " + " | ".join("---" for _ in modes) + " |"]
  for model, path in runs.items():
    cells = []
    base = None
    for mode in modes:
      tta = _evaluate(path, tta=mode)["tta"]
      base = tta["accuracy_without"]
      cells.append(f"{100 * tta['accuracy']:.2f}% "
                   f"({100 * (tta['accuracy'] - base):+.2f} pt)")
    lines.append(f"| {model} | {100 * base:.2f}% | " + " | ".join(cells)
                 + " |")
  return "\n".join(lines)


def ensemble_table(runs, families):
  members = [runs[f] for f in families]
  lines = ["| model | accuracy | macro F1 | ECE | weight |",
           "| --- | --- | --- | --- | --- |"]
  for weights in ("equal", "val_accuracy"):
    report = _evaluate(",".join(members), ensemble_weights=weights)
    if weights == "equal":
      for m, path in zip(report["ensemble"]["members"], members):
        single = _evaluate(path)
        lines.append(f"| {m['model']} | {100 * m['accuracy']:.2f}% | "
                     f"{m['macro_f1']:.4f} | {single['ece']:.4f} | - |")
    w = ", ".join(f"{m['weight']:.3f}" for m in report["ensemble"]["members"])
    lines.append(f"| ensemble ({weights}) | {100 * report['accuracy']:.2f}% | "
                 f"{report['macro_f1']:.4f} | {report['ece']:.4f} | {w} |")
  return "\n".join(lines)


def main(argv):
  del argv
  runs = _runs_of_seed(_RUNS.value, _SEED.value)
  if not runs:
    raise app.UsageError(f"No finished <model>-s{_SEED.value} runs in "
                         f"{_RUNS.value}.")
  missing = [f for f in _ENSEMBLE.value if f not in runs]
  if missing:
    raise app.UsageError(f"No finished run of {', '.join(missing)} in "
                         f"{_RUNS.value}.")
  modes = list(_TTA.value)
  if "tta" in _TABLES.value:
    print(f"test accuracy with test-time augmentation ({_RUNS.value}, seed "
          f"{_SEED.value})\n")
    print(tta_table(runs, modes) + "\n")
  if "ensemble" in _TABLES.value:
    print(f"ensemble of {', '.join(_ENSEMBLE.value)} against its members "
          f"({_RUNS.value}, seed {_SEED.value})\n")
    print(ensemble_table(runs, _ENSEMBLE.value))


if __name__ == "__main__":
  app.run(main)
