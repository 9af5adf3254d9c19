"""imgrec-scan: checks every image of a data folder, reports the unusable.

    imgrec-scan --data_dir=photos
    imgrec-scan --data_dir=photos --max_bad_fraction=0.3 --report=scan.json

Broken, truncated and non-image files are skipped and listed; files tf.io
would misread are converted once into --prepared_dir. Rerunning only
re-checks changed files.
"""

import os
import tempfile

from absl import flags

from imgrec.cli import common
from imgrec.data import folder as folder_lib
from imgrec.data import scan
from imgrec.errors import ImgrecError

flags.DEFINE_string("data_dir", None, "Image folder: root/<class>/* or "
                    "root/{train,val,test}/<class>/*.")
flags.DEFINE_integer("max_image_pixels", scan.DEFAULT_MAX_IMAGE_PIXELS,
                     "Files whose header declares more pixels are skipped "
                     "as decompression bombs. Default: Pillow's limit.")
flags.DEFINE_float("max_bad_fraction", 0.1, "Largest fraction of a class's "
                   "files that may be skipped; more is an error.")
flags.DEFINE_string("report", None, "Where to write the JSON report. "
                    "Default: <data_dir>/data_report.json, or the prepared "
                    "folder when data_dir is read-only.")
flags.DEFINE_string("prepared_dir", None, "Folder for converted images and "
                    "the scan cache. Default: ~/.cache/imgrec/prepared/"
                    "<name>-<hash of data_dir>.")
flags.DEFINE_integer("channels", 3, "1 or 3: the channels training decodes "
                     "with (tf.io reads BMP, GIF and WebP only as 3).")
flags.DEFINE_integer("workers", None, "Scan threads. Default: one per CPU.")
flags.DEFINE_boolean("progress", True, "Show a progress line on a terminal.")
# The same split flags as imgrec-train, so the per-split counts match a run.
flags.DEFINE_float("val_split", 0.1, "Fraction of each class held out for "
                   "validation when the folder has no val split.")
flags.DEFINE_float("test_split", 0.1, "Fraction of each class held out for "
                   "testing when the folder has no test split.")
flags.DEFINE_integer("seed", 42, "Seed of the split.")

FLAGS = flags.FLAGS


def _writable(directory):
  """Whether a file can be created in `directory` (os.access lies for root)."""
  try:
    fd, path = tempfile.mkstemp(prefix=".imgrec-", dir=directory)
  except OSError:
    return False
  os.close(fd)
  os.remove(path)
  return True


def default_report_path(data_dir, prepared_dir):
  """Returns where the report goes by default.

  <data_dir>/data_report.json, or <prepared_dir>/data_report.json when
  data_dir is read-only.
  """
  where = data_dir if _writable(data_dir) else prepared_dir
  return os.path.join(where, scan.REPORT_NAME)


def main(argv):
  if len(argv) > 1:
    common.fail(f"Unexpected arguments: {' '.join(argv[1:])}. Flags start "
                "with --.")
  if not FLAGS.data_dir:
    common.fail("--data_dir is required: the image folder to scan.")
  found = folder_lib.find_images(FLAGS.data_dir, val_split=FLAGS.val_split,
                                 test_split=FLAGS.test_split, seed=FLAGS.seed)
  prepared_dir = FLAGS.prepared_dir or scan.default_prepared_dir(found.root)
  report_path = FLAGS.report or default_report_path(found.root, prepared_dir)
  try:
    _, report = scan.scan_folder(
        found, max_image_pixels=FLAGS.max_image_pixels,
        max_bad_fraction=FLAGS.max_bad_fraction, prepared_dir=prepared_dir,
        report_path=report_path, workers=FLAGS.workers,
        progress=FLAGS.progress, channels=FLAGS.channels)
  except ImgrecError as e:
    # The counts show what to fix; the error itself stays the last line.
    if getattr(e, "report", None):
      _print_summary(found, e.report, report_path, prepared_dir)
    raise
  _print_summary(found, report, report_path, prepared_dir)


def _print_summary(found, report, report_path, prepared_dir):
  print(f"data_dir: {found.root} ({len(found.class_names)} classes)")
  print(scan.format_summary(report))
  print(f"report: {report_path}")
  print(f"prepared_dir: {prepared_dir}", flush=True)


def run():
  common.run_main(main)


if __name__ == "__main__":
  run()
