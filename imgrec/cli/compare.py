"""imgrec-compare: one table of finished runs, best first.

    imgrec-compare runs/*
    imgrec-compare --format=csv --output=/tmp/runs.csv runs/

Arguments are run folders, or folders whose subfolders are runs. Folders
that are not finished runs are listed on stderr and left out. The table goes
to stdout (Markdown or CSV); --output also writes it to a file.
"""

import logging
import sys

from imgrec.cli import common
from imgrec.config import CompareConfig

logger = logging.getLogger("imgrec")


def main(config, argv):
  config.validate()
  if len(argv) < 2:
    common.fail("Give run folders (or a folder of runs) after the flags, "
                "e.g. imgrec-compare runs/*.")
  from imgrec import fileio  # pylint: disable=g-import-not-at-top
  from imgrec.evaluation import compare  # pylint: disable=g-import-not-at-top
  rows, skipped = compare.collect_runs(argv[1:], sort=config.sort)
  for path, why in skipped:
    sys.stderr.write(f"skipped: {path}: {why}\n")
  if not rows:
    common.fail(f"No finished runs among {len(argv) - 1} folder(s): each "
                "needs config.json and report.json (imgrec-train writes "
                "them).")
  if config.table_format() == "csv":
    text = compare.format_csv(rows)
  else:
    text = compare.format_markdown(rows)
  sys.stdout.write(text)
  sys.stdout.flush()
  if config.output:
    fileio.write_text(config.output, text)
    logger.info("table written to %s", config.output)


def run():
  common.run_config_main(CompareConfig, main, tensorflow=False)


if __name__ == "__main__":
  run()
