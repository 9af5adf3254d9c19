"""imgrec-compare: one table of finished runs, best first.

    imgrec-compare runs/*
    imgrec-compare --format=csv --output=/tmp/runs.csv runs/

Arguments are run folders, or folders whose subfolders are runs. Folders
that are not finished runs, or whose files are damaged, are listed on
stderr (one line each, with the reason) and left out: the table of the
others is still printed, and the exit status is 1. With no usable run it
is 2. The table goes to stdout (Markdown or CSV); --output also writes it
to a file (an existing one only with --overwrite; a FIFO or device is
written into; a file the comparison reads is refused).
"""

import logging
import sys

from imgrec.cli import common
from imgrec.config import CompareConfig

logger = logging.getLogger("imgrec")


def _one_line(text):
  return text.replace("\n", "\\n").replace("\r", "\\r")


def main(config, argv):
  config.validate()
  paths = argv[1:]
  if not paths:
    common.fail("Give run folders (or a folder of runs) after the flags, "
                "e.g. imgrec-compare runs/*.")
  from imgrec import fileio  # pylint: disable=g-import-not-at-top
  from imgrec.evaluation import compare  # pylint: disable=g-import-not-at-top
  folders, skipped = compare.find_run_folders(paths)
  if config.output:
    fileio.check_output(config.output, flag="--output",
                        inputs=[*paths, *compare.files_read(folders)],
                        overwrite=config.overwrite)
  rows, damaged = compare.summarize_runs(folders)
  skipped += damaged
  for path, why in skipped:
    sys.stderr.write(_one_line(f"skipped: {path}: {why}") + "\n")
  if not rows:
    common.fail(f"No finished runs among {len(paths)} folder(s): each "
                "needs config.json and report.json (imgrec-train writes "
                "them).")
  rows = compare.sort_rows(rows, config.sort)
  if config.table_format() == "csv":
    text = compare.format_csv(rows)
  else:
    text = compare.format_markdown(rows)
  sys.stdout.write(text)
  sys.stdout.flush()
  if config.output and config.output != "-":  # `-`: stdout, written above.
    with fileio.open_output(config.output) as f:
      f.write(text)
    logger.info("table written to %s", config.output)
  if skipped:
    logger.info("%d folder(s) skipped (listed above); exit status 1",
                len(skipped))
    return 1
  return 0


def run():
  common.run_config_main(CompareConfig, main, tensorflow=False)


if __name__ == "__main__":
  run()
