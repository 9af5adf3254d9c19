"""imgrec-evaluate: writes <model_dir>/report.json (and report.txt)."""

from imgrec.cli import common
from imgrec.config import EvaluateConfig


def main(config, argv):
  common.no_positional(argv)
  from imgrec.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  from imgrec.evaluation import report as report_lib  # pylint: disable=g-import-not-at-top
  report = evaluate.evaluate(config)
  print(report_lib.format_report(report), end="")
  print(f"report: {config.model_dir}/report.json")


def run():
  common.run_config_main(EvaluateConfig, main)


if __name__ == "__main__":
  run()
