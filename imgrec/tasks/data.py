"""The data of a task: list a config's images and check them, without loading TensorFlow.

A scan whose results are all cached then answers in a fraction of a second.
"""

import os

from imgrec import datasets
from imgrec import fileio
from imgrec.config import ScanConfig
from imgrec.data import folder as folder_lib
from imgrec.data import scan
from imgrec.data import sources
from imgrec.errors import ImgrecError


def find_data(config):
  """Lists the images of a DataConfig's source, before any check or split.

  Returns:
    An ImageFolder (a ListedImageFolder for a labels CSV) whose splits are
    those the data names, less the files of `config.exclude`;
    `folder.carve_splits` completes them.
  """
  if config.labels_csv:
    found = sources.read_labels_csv(config.labels_csv,
                                    allow_outside=config.allow_outside)
  elif config.tfds:
    found = sources.load_tfds(config.tfds, config.tfds_data_dir)
  else:
    data_dir = config.data_dir or datasets.load_builtin(config.dataset,
                                                        seed=0)
    found = folder_lib.find_images(data_dir, carve=False,
                                   allow_outside=config.allow_outside)
  if getattr(config, "exclude", None):
    found = folder_lib.exclude(found, folder_lib.read_exclude(config.exclude))
  return found


def scan_data(config):
  """Checks every image of a ScanConfig's data, as `imgrec-scan` does.

  The report goes to `config.report`, default `data_report.json` in the
  prepared folder: nothing is written into the data folder. A `report`
  that exists is replaced only with `config.overwrite`, and never when it
  is one of the files scanned.

  Args:
    config: a ScanConfig, or a dict of its fields.

  Returns:
    {"folder": the usable files, split as training would split them,
     "report": the report dict, "report_path": where it was written,
     "prepared_dir": the folder of converted copies and the scan cache}.

  Raises:
    ImgrecError: bad config or data; its `result` attribute holds the
      report when the scan itself found too many bad files.
  """
  config = ScanConfig.coerce(config, "scan").validate()
  found = find_data(config)
  if config.report:
    fileio.check_output(config.report, flag="--report", inputs=[
        config.labels_csv or found.root,
        *(p for split in found.splits.values() for p in split.paths)],
                        overwrite=config.overwrite)
  prepared_dir = os.path.abspath(config.prepared_dir or
                                 scan.default_prepared_dir(found.root))
  report_path = config.report or os.path.join(prepared_dir, scan.REPORT_NAME)
  result = {"report_path": report_path, "prepared_dir": prepared_dir}
  try:
    kept, report = scan.scan_folder(
        found, max_image_pixels=config.max_image_pixels,
        max_bad_fraction=config.max_bad_fraction, prepared_dir=prepared_dir,
        report_path=report_path, workers=config.workers,
        progress=config.progress)
  except ImgrecError as e:
    if getattr(e, "report", None):
      e.result = dict(result, report=e.report)
    raise
  folder = folder_lib.carve_splits(kept, config.val_split, config.test_split,
                                   config.seed)
  return dict(result, folder=folder, report=report)
