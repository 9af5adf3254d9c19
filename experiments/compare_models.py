r"""Every from-scratch model family on the same data and budget, in one table.

    python experiments/compare_models.py --data_dir=../shared/data/mnist-10k \
        --epochs=10 --image_size=28 --channels=1 --override=--flip=none
    python experiments/compare_models.py --epochs=10

Trains each model of `imgrec.list_models("scratch")` (mlp, resnet, row_lstm,
simple_cnn, vit_tiny) once per seed (--seeds=3: 42, 43, 44) with
`imgrec-train --export=false`, all with the same --epochs, --batch_size and
--image_size (default: each model's own input size), on --data_dir or,
without it, the built-in dataset. Then it prints, per family, best first:
test accuracy mean +- std over the seeds, macro F1, ECE, parameters, mean
training time and median latency of one image (the figures each run wrote:
report.json, training.json; "-" where a run did not record one), and writes
that table (compare_models.md, compare_models.csv) and every run
(runs.csv, the columns of `imgrec-compare --format=csv`) into --out_dir.

Runs go to --out_dir/<model>-s<seed> (default: a folder under the system's
temporary folder named after the data), one log each in --out_dir/logs. A
rerun reuses every finished run with the same settings and resumes an
unfinished one, so a long job can be stopped and started again; --rerun
trains every run afresh. A run that fails is reported and left out; the
script then exits with status 1.

Expected (2 CPU cores, 2026-11-30; README "Results" has the tables): on
MNIST-10k with --epochs=5 --image_size=28 --channels=1, simple_cnn 99.38 ±
0.13%, resnet 99.33 ± 0.10, row_lstm 97.78 ± 0.23, mlp 92.58 ± 1.10,
vit_tiny 89.38 ± 1.09 (about 40 minutes for the 15 runs). A smoke test
(built-in shapes, --epochs=1 --seeds=1 --models=mlp,simple_cnn) takes
about a minute.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from imgrec import fileio
from imgrec.cli import common
from imgrec.cli import flags as flags_lib
from imgrec.config import TrainConfig
from imgrec.errors import ImgrecError
from imgrec.evaluation import compare
from imgrec.run_folder import RunFolder
import recipe_runs

flags.DEFINE_string("data_dir", None, "Image folder. Default: imgrec-train's "
                    "built-in dataset.")
flags.DEFINE_integer("epochs", 10, "Training epochs of every run.")
flags.DEFINE_string("image_size", None, "SIZE or HEIGHT,WIDTH for every "
                    "model. Default: each model's own input size.")
flags.DEFINE_integer("channels", None, "--channels of every run (1 for "
                     "grayscale data). Default: imgrec-train's.")
flags.DEFINE_integer("batch_size", None, "--batch_size of every run. "
                     "Default: imgrec-train's.")
flags.DEFINE_string("seeds", "3", "N (seeds 42 .. 42+N-1) or a "
                    "comma-separated list of seeds, e.g. 42,43,44.")
flags.DEFINE_list("models", None, "Models to train. Default: every "
                  "from-scratch model of the registry.")
flags.DEFINE_multi_string("override", [], "More imgrec-train flags for every "
                          "run, e.g. --override=--flip=none.")
flags.DEFINE_string("out_dir", None, "Where runs, logs and tables go. "
                    "Default: <tmp>/imgrec-compare-models/<data name>.")
flags.DEFINE_bool("rerun", False, "Train every run afresh, even those "
                  "already finished with the same settings.")
FLAGS = flags.FLAGS


def parse_seeds(text):
  """Seeds from "N" (N seeds from imgrec-train's default) or "a,b,c"."""
  parts = [p.strip() for p in text.split(",") if p.strip()]
  try:
    values = [int(p) for p in parts]
  except ValueError:
    raise app.UsageError(f"--seeds: expected N or a list of integers. "
                         f"Received: seeds={text!r}") from None
  if "," in text:
    return values
  if len(values) != 1 or values[0] < 1:
    raise app.UsageError(f"--seeds: expected N >= 1 or a list of seeds. "
                         f"Received: seeds={text!r}")
  first = TrainConfig().seed
  return list(range(first, first + values[0]))


def default_out_dir(data_dir):
  name = os.path.basename(os.path.normpath(data_dir)) if data_dir else (
      TrainConfig().dataset)
  return os.path.join(tempfile.gettempdir(), "imgrec-compare-models", name)


def train_flags(model, seed, model_dir):
  """The imgrec-train flags of one run."""
  out = [f"--model={model}", f"--seed={seed}", f"--epochs={FLAGS.epochs}"]
  for name in ("data_dir", "image_size", "channels", "batch_size"):
    if FLAGS[name].value is not None:
      out.append(f"--{name}={FLAGS[name].value}")
  return out + list(FLAGS.override) + [
      "--export=false", "--overwrite", f"--model_dir={model_dir}"]


def config_of(args):
  """The TrainConfig imgrec-train makes of `args`: the same flags, parsed."""
  flag_values = flags.FlagValues()
  names = flags_lib.define_flags(TrainConfig, flag_values=flag_values)
  flag_values(["imgrec-train", *args])
  return flags_lib.config_from_flags(TrainConfig, names, flag_values)


def is_finished(model_dir, args):
  """Whether `model_dir` holds a finished, evaluated run of these settings."""
  from imgrec import tasks  # pylint: disable=g-import-not-at-top
  run = RunFolder(model_dir)
  try:
    if run.read_report() is None or run.read_training() is None:
      return False
    return run.check_resumable(tasks.resolve(config_of(args),
                                             check_files=False).config)
  except ImgrecError:
    return False


def train(model_dir, args, log_path):
  """Runs imgrec-train; returns None, or the tail of its output if it failed."""
  cmd = recipe_runs.imgrec_train_command() + args
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  output = proc.stdout + proc.stderr
  fileio.write_text(log_path, " ".join(cmd) + "\n\n" + output)
  if proc.returncode == 0 and RunFolder(model_dir).read_report() is not None:
    return None
  return f"exit {proc.returncode}: {output.strip()[-1500:]}"


def _mean(values):
  values = [v for v in values if v is not None]
  return statistics.mean(values) if values else None


def family_rows(rows, models):
  """Per model: (model, seeds, accuracy mean, std, macro F1, ECE, params,
  train seconds, latency median, latency source), best mean accuracy first."""
  out = []
  for model in models:
    runs = [r for r in rows if r.model == model]
    if not runs:
      continue
    accuracies = [r.accuracy for r in runs]
    latencies = [r for r in runs if r.latency_ms is not None]
    out.append((
        model, len(runs), statistics.mean(accuracies),
        statistics.stdev(accuracies) if len(runs) > 1 else 0.0,
        _mean([r.macro_f1 for r in runs]), _mean([r.ece for r in runs]),
        runs[0].num_params, _mean([r.train_seconds for r in runs]),
        statistics.median(r.latency_ms for r in latencies)
        if latencies else None,
        latencies[0].latency_source if latencies else None))
  return sorted(out, key=lambda f: -f[2])


MARKDOWN_HEADER = ("model", "seeds", "accuracy % (mean ± std)", "macro F1",
                   "ECE", "params", "train s (mean)", "latency ms (median)")
CSV_HEADER = ("model", "seeds", "accuracy_mean", "accuracy_std", "macro_f1",
              "ece", "num_params", "train_seconds", "latency_ms",
              "latency_source")


def format_families(families, title):
  cells = [(m, n, f"{100 * acc:.2f} ± {100 * std:.2f}",
            compare.format_value(f1, ".4f"), compare.format_value(ece, ".4f"),
            compare.format_value(params, ","),
            compare.format_value(seconds, ".1f"),
            compare.format_latency(latency, source))
           for m, n, acc, std, f1, ece, params, seconds, latency, source
           in families]
  return (f"{title}\n\n" + compare.markdown_table(MARKDOWN_HEADER, cells)
          + f"\n{compare.LATENCY_NOTE}\n")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  common.import_tensorflow_quietly()
  from imgrec.models import registry  # pylint: disable=g-import-not-at-top
  seeds = parse_seeds(FLAGS.seeds)
  models = FLAGS.models or registry.list_models("scratch")
  unknown = sorted(set(models) - set(registry.list_models()))
  if unknown:
    raise app.UsageError(f"Unknown model(s) {', '.join(unknown)}; known: "
                         f"{', '.join(registry.list_models())}.")
  out_dir = FLAGS.out_dir or default_out_dir(FLAGS.data_dir)
  os.makedirs(out_dir, exist_ok=True)
  print(f"runs and tables: {out_dir}", flush=True)
  folders, failures = [], []
  plan = [(seed, model) for seed in seeds for model in models]
  for i, (seed, model) in enumerate(plan, 1):
    model_dir = os.path.join(out_dir, f"{model}-s{seed}")
    args = train_flags(model, seed, model_dir)
    folders.append(model_dir)
    label = f"[{i}/{len(plan)}] {model} seed {seed}"
    if not FLAGS.rerun and is_finished(model_dir, args):
      print(f"{label}: finished before, reused", flush=True)
      continue
    if FLAGS.rerun:
      RunFolder(model_dir).clear()
    start = time.time()
    error = train(model_dir, args,
                  os.path.join(out_dir, "logs", f"{model}-s{seed}.log"))
    if error:
      failures.append((label, error))
      print(f"{label}: FAILED ({error.splitlines()[0]})", flush=True)
    else:
      print(f"{label}: trained in {time.time() - start:.0f} s", flush=True)
  rows, skipped = compare.collect_runs(folders, sort="name")
  for path, why in skipped:
    print(f"left out: {path}: {why}")
  families = family_rows(rows, models)
  size = FLAGS.image_size or "each model's own"
  title = (f"data: {FLAGS.data_dir or TrainConfig().dataset}, epochs: "
           f"{FLAGS.epochs}, image size: {size}, seeds: "
           f"{', '.join(map(str, seeds))}")
  table = format_families(families, title)
  print("\n" + table)
  fileio.write_text(os.path.join(out_dir, "compare_models.md"), table)
  fileio.write_text(os.path.join(out_dir, "compare_models.csv"),
                    compare.csv_table(CSV_HEADER, families))
  fileio.write_text(os.path.join(out_dir, "runs.csv"),
                    compare.format_csv(rows))
  print(f"tables: {os.path.join(out_dir, 'compare_models.md')}, .csv, "
        "runs.csv")
  for label, error in failures:
    print(f"\n{label} failed: {error}", file=sys.stderr)
  if failures:
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
