"""imgrec-evaluate: the report of a run or an ensemble on one or more datasets.

    imgrec-evaluate --model_dir=runs/a                      # its test split
    imgrec-evaluate --model_dir=runs/a --data_dir=x,y --tta=flip
    imgrec-evaluate --model_dir=runs/a,runs/b,runs/c --report_dir=runs/abc

Writes report.json, report.txt, report.html and the pictures into the
model_dir (or --report_dir) and prints the text report.
"""

from imgrec.cli import common
from imgrec.config import EvaluateConfig


def main(config, argv):
  common.no_positional(argv)
  from imgrec.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  report = evaluate.evaluate(config)
  print(evaluate.format_text(report), end="")
  files = report.get("files")
  if files:
    print(f"report: {files['report']}")
    if files["html"]:
      print(f"html: {files['html']}")
  else:
    print("(pass --report_dir=FOLDER to keep report.json, report.html and "
          "the pictures)")


def run():
  common.run_config_main(EvaluateConfig, main)


if __name__ == "__main__":
  run()
