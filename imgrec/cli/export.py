"""imgrec-export: SavedModel and TFLite files from a trained model_dir, measured."""

import sys

from imgrec.cli import common
from imgrec.config import ExportConfig


def main(config, argv):
  common.no_positional(argv)
  from imgrec.export import exporter  # pylint: disable=g-import-not-at-top
  from imgrec.export import interrupt  # pylint: disable=g-import-not-at-top
  from imgrec.export import measure  # pylint: disable=g-import-not-at-top
  with common.quietly():  # The converter's and LiteRT's own lines.
    try:
      out = exporter.export(config)
    except interrupt.ExportInterrupted as e:  # SIGTERM or Ctrl-C: no failure.
      out = e
  if isinstance(out, interrupt.ExportInterrupted):
    sys.stderr.write(f"imgrec-export: {out}\n")
    sys.exit(out.exit_code)
  print(f"saved_model: {out['saved_model']}")
  for path in out["tflite"].values():
    print(f"tflite: {path}")
  if out["report"]:
    print(measure.format_report(out["report"]))
    print(f"report: {out['report_path']}")


def run():
  common.run_config_main(ExportConfig, main)


if __name__ == "__main__":
  run()
