"""imgrec-audit: duplicates, leakage, label issues and outliers of a data set.

    imgrec-audit --data_dir=photos
    imgrec-audit --data_dir=photos --parts=duplicates --out=/tmp/audit
    imgrec-audit --labels_csv=labels.csv --folds=5 --model=resnet50

Nothing is written into the data: audit.json, audit.html, exclude.txt and
relabel.csv go to --out (default: audit/ in the scan's prepared folder).
Every flag is a field of `imgrec.AuditConfig`.
"""

from imgrec.cli import common
from imgrec.config import AuditConfig


def main(config, argv):
  common.no_positional(argv)
  from imgrec.training import audit  # pylint: disable=g-import-not-at-top
  result = audit.audit(config)
  found = result["audit"]
  summary = found["summary"]
  print(f"data: {found['data']['root']} ({found['data']['images']} images, "
        f"{len(found['data']['class_names'])} classes)")
  duplicates = summary.get("duplicates")
  if duplicates:
    print(f"duplicates: {duplicates['groups']} groups "
          f"({duplicates['exact_groups']} exact, {duplicates['near_groups']} "
          f"near), {duplicates['leakage_groups']} across splits, "
          f"{duplicates['conflict_groups']} across classes")
  model = summary.get("model")
  if model:
    print(f"judged out of sample: {model['judged']} images"
          + (f" ({model['not_judged']} training images of --model_dir not "
             "judged)" if model["not_judged"] else ""))
  if "label_issues" in found:
    print(f"label issues: {len(found['label_issues'])}")
  if "outliers" in found:
    print(f"outliers: {len(found['outliers'])}")
  for name, path in result["paths"].items():
    print(f"{name}: {path}")


def run():
  common.run_config_main(AuditConfig, main)


if __name__ == "__main__":
  run()
