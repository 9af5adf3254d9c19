"""The data scan: every image file checked once before training, in parallel, cached.

    kept, report = scan_folder(found, report_path="data_report.json")

Modules, from one file up:

* `check`: one file, readable, not a bomb, and how the pipeline reads it.
* `cache`: results of earlier scans, keyed by path, size, mtime, settings.
* `files`: many files at decode speed (`scan_files`, `Fill`).
* `report`: the per-class counts and reasons of `data_report.json`.
* `folder`: an `ImageFolder` scanned, its usable files kept (`scan_folder`).
"""

from imgrec.data.scan.check import FileResult
from imgrec.data.scan.files import default_workers
from imgrec.data.scan.files import Fill
from imgrec.data.scan.files import scan_files
from imgrec.data.scan.folder import default_prepared_dir
from imgrec.data.scan.folder import REPORT_NAME
from imgrec.data.scan.folder import scan_folder

__all__ = ["FileResult", "Fill", "REPORT_NAME", "default_prepared_dir",
           "default_workers", "scan_files", "scan_folder"]
