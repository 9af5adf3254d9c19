"""imgrec-scan: checks every image of a data folder, reports the unusable.

    imgrec-scan --data_dir=photos
    imgrec-scan --data_dir=photos --max_bad_fraction=0.3 --report=scan.json

Broken, truncated and non-image files are skipped and listed; files
TensorFlow would misread are converted once into --prepared_dir. Rerunning
only re-checks changed files. Nothing is written into the data folder.
An existing --report file is replaced only with --overwrite; --report=-
prints the JSON on stdout (the summary then goes to stderr).
"""

import sys

from imgrec.cli import common
from imgrec.config import ScanConfig
from imgrec.errors import ImgrecError


def _print_summary(result):
  from imgrec.data.scan import report as scan_report  # pylint: disable=g-import-not-at-top
  report = result["report"]
  # With --report=- the JSON is stdout: the summary goes beside it.
  out = sys.stderr if result["report_path"] == "-" else sys.stdout
  print(f"data_dir: {report['root']} ({len(report['class_names'])} classes)",
        file=out)
  print(scan_report.format_summary(report), file=out)
  print(f"report: {result['report_path']}", file=out)
  print(f"prepared_dir: {result['prepared_dir']}", file=out, flush=True)


def main(config, argv):
  common.no_positional(argv)
  from imgrec.tasks import data  # pylint: disable=g-import-not-at-top
  try:
    result = data.scan_data(config)
  except ImgrecError as e:
    # The counts show what to fix; the error itself stays the last line.
    if getattr(e, "result", None):
      _print_summary(e.result)
    raise
  _print_summary(result)


def run():
  common.run_config_main(ScanConfig, main, exclude=("scan",), tensorflow=False)


if __name__ == "__main__":
  run()
