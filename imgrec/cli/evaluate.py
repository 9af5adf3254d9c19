"""imgrec-evaluate: writes <model_dir>/report.json (and report.txt)."""

from absl import flags

from imgrec.cli import common

flags.DEFINE_string("model_dir", None, "Output folder of imgrec-train.")
flags.DEFINE_string("data_dir", None, "Evaluate on this folder instead of the "
                    "run's own test split.")
flags.DEFINE_enum("split", "test", ("train", "val", "test"), "Split to use.")
flags.DEFINE_integer("batch_size", None, "Batch size (default: the run's).")

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    common.fail(f"Unexpected arguments: {' '.join(argv[1:])}.")
  if not FLAGS.model_dir:
    common.fail("--model_dir is required: the output folder of imgrec-train.")
  from imgrec.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  from imgrec.evaluation import report as report_lib  # pylint: disable=g-import-not-at-top
  report = evaluate.evaluate_model_dir(FLAGS.model_dir, FLAGS.data_dir,
                                       FLAGS.split, FLAGS.batch_size)
  print(report_lib.format_report(report), end="")
  print(f"report: {FLAGS.model_dir}/report.json")


def run():
  common.run_main(main)


if __name__ == "__main__":
  run()
