"""Runs imgrec recipes from flagfiles over seeds and prints accuracy tables.

Shared by the accuracy experiments (mnist.py, orl_faces.py,
accuracy_table.py); not a script itself. A recipe is an absl flagfile for
`imgrec-train`, one `--flag=value` per line; each run is one `imgrec-train`
process, so a recipe measured here is exactly what a user gets from

    imgrec-train --flagfile=experiments/<recipe>.flags --data_dir=... --seed=S
"""

import dataclasses
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import flags


def define_run_flags():
  """Defines the flags every accuracy script shares (--recipes is its own).

  --seeds, --override, --work_dir and --json; call once at import time.
  """
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; each recipe runs once "
                    "per seed.")
  flags.DEFINE_multi_string("override", [], "Extra imgrec-train flags for "
                            "every imgrec recipe, e.g. --override=--epochs=5.")
  flags.DEFINE_string("work_dir", None, "Where run folders and logs go. "
                      "Default: a new temporary folder.")
  flags.DEFINE_string("json", None, "Also write every run and the summary "
                      "to this JSON file.")


def make_work_dir(work_dir, prefix):
  """Creates `work_dir`, or a new temporary folder named `prefix`*; returns it."""
  work_dir = work_dir or tempfile.mkdtemp(prefix=prefix)
  os.makedirs(work_dir, exist_ok=True)
  return work_dir


_WALL_RE = re.compile(r"^wall time: ([0-9.]+) s$", re.MULTILINE)


@dataclasses.dataclass
class Run:
  """One training run: its test accuracy and wall time in seconds.

  `seconds` is what the run itself reports (imgrec: data scan, input pipeline,
  fit, test evaluation; anchors: image loading, fit, evaluation), without
  interpreter start-up and imports, which neither side counts.
  """
  recipe: str
  seed: int
  accuracy: float
  seconds: float
  process_seconds: float | None = None


def read_flagfile(path):
  """Returns the flags of an absl flagfile: `--name=value` lines, no comments."""
  out = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      line = line.strip()
      if line and not line.startswith(("#", "//")):
        out.append(line)
  return out


def imgrec_train_command():
  """The `imgrec-train` of the running interpreter's environment.

  $IMGREC_TRAIN, when set, replaces it (a command line, e.g. a patched
  trainer for a what-if run).
  """
  if os.environ.get("IMGREC_TRAIN"):
    return shlex.split(os.environ["IMGREC_TRAIN"])
  exe = os.path.join(os.path.dirname(sys.executable), "imgrec-train")
  if os.path.exists(exe):
    return [exe]
  return [sys.executable, "-m", "imgrec.cli.train"]


def run_imgrec(recipe, flagfile, *, data_dir, seed, model_dir, extra=(),
               log_dir=None):
  """Trains one seed of a flagfile recipe with `imgrec-train`.

  Args:
    recipe: the name shown in tables.
    flagfile: path of the recipe's flagfile.
    data_dir: the image folder.
    seed: the run's --seed.
    model_dir: a fresh output folder (removed first if it exists, so an old
      checkpoint is never resumed).
    extra: more flags, after the flagfile (they win).
    log_dir: where to keep the run's output as <recipe>-<seed>.log.

  Returns:
    A Run.

  Raises:
    RuntimeError: imgrec-train failed; the message ends with its output.
  """
  shutil.rmtree(model_dir, ignore_errors=True)
  cmd = imgrec_train_command() + [
      f"--flagfile={flagfile}", f"--data_dir={data_dir}", f"--seed={seed}",
      f"--model_dir={model_dir}", "--export=false", *extra]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  start = time.time()
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                        check=False)
  process_seconds = time.time() - start
  output = proc.stdout + proc.stderr
  if log_dir:
    os.makedirs(log_dir, exist_ok=True)
    with open(os.path.join(log_dir, f"{recipe}-{seed}.log"), "w",
              encoding="utf-8") as f:
      f.write(" ".join(cmd) + "\n\n" + output)
  wall = _WALL_RE.search(proc.stdout)
  if proc.returncode or not wall:
    raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n"
                       f"{output[-3000:]}")
  with open(os.path.join(model_dir, "report.json"), encoding="utf-8") as f:
    accuracy = json.load(f)["accuracy"]
  return Run(recipe, seed, float(accuracy), float(wall.group(1)),
             process_seconds)


def warm_scan_cache(data_dir, report_path):
  """Scans a grayscale folder once, untimed, as a user's second run finds it.

  The scan also converts what tf.io cannot read (ORL's PGMs) into its cache.
  """
  exe = os.path.join(os.path.dirname(sys.executable), "imgrec-scan")
  cmd = ([exe] if os.path.exists(exe) else
         [sys.executable, "-m", "imgrec.cli.scan"])
  subprocess.run(cmd + [f"--data_dir={data_dir}", "--noprogress",
                        f"--report={report_path}"],
                 capture_output=True, check=False)


def summarize(runs):
  """Groups runs by recipe, in first-seen order: {recipe: stats dict}."""
  groups = {}
  for run in runs:
    groups.setdefault(run.recipe, []).append(run)
  out = {}
  for recipe, rs in groups.items():
    accs = [r.accuracy for r in rs]
    secs = [r.seconds for r in rs]
    out[recipe] = dict(
        n=len(rs), mean=statistics.mean(accs),
        std=statistics.stdev(accs) if len(accs) > 1 else 0.0,
        min=min(accs), max=max(accs), seconds=statistics.mean(secs),
        accuracies=accs, all_seconds=secs)
  return out


def format_table(runs, title=None, markdown=False):
  """Returns the table: recipe, mean, std, min, max accuracy, mean seconds."""
  stats = summarize(runs)
  header = ["recipe", "seeds", "mean acc %", "std", "min", "max", "mean wall s"]
  rows = [[name, str(s["n"]), f"{100 * s['mean']:.2f}",
           f"{100 * s['std']:.2f}", f"{100 * s['min']:.2f}",
           f"{100 * s['max']:.2f}", f"{s['seconds']:.1f}"]
          for name, s in stats.items()]
  lines = [title] if title else []
  if markdown:
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(" --- " for _ in header) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
  else:
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    fmt = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, widths))
    lines.append(fmt(header))
    lines += [fmt(r) for r in rows]
  return "\n".join(lines)


def format_runs(runs):
  """Returns one line per run (seed, accuracy, seconds), for the log."""
  return "\n".join(
      f"  {r.recipe:<10} seed {r.seed}: {100 * r.accuracy:.2f}%  "
      f"{r.seconds:.1f} s" + (f" (process {r.process_seconds:.1f} s)"
                              if r.process_seconds else "")
      for r in runs)


def write_json(runs, path):
  """Writes every run and the per-recipe summary as JSON."""
  with open(path, "w", encoding="utf-8") as f:
    json.dump({"runs": [dataclasses.asdict(r) for r in runs],
               "summary": summarize(runs)}, f, indent=1)
    f.write("\n")
