"""imgrec-extend: adds classes to a finished run from a few images each.

    imgrec-extend --model_dir=runs/a --add_dir=new_classes --out_dir=runs/a+
    imgrec-extend ... --finetune_head_epochs=5 --export

The new classes are imprinted into the head (no retraining); the extended run
is a run folder of its own. Every flag is a field of `imgrec.ExtendConfig`.
"""

from imgrec.cli import common
from imgrec.config import ExtendConfig


def main(config, argv):
  common.no_positional(argv)
  from imgrec.training import extend  # pylint: disable=g-import-not-at-top
  result = extend.extend(config)
  report = result["report"]
  seconds = result["seconds"]
  print(f"model_dir: {result['model_dir']}")
  print(f"new classes: {', '.join(result['new_classes'])}")
  old, new = report["old_classes"], report["new_classes"]
  before = old["accuracy_before"]
  print(f"{report['data']['split']} accuracy: old classes "
        f"{old['accuracy']:.4f}" + (f" (before: {before:.4f})"
                                    if before is not None else "") +
        (f", new classes {new['accuracy']:.4f}"
         if new["accuracy"] is not None else ""))
  print(f"seconds: embedding {seconds['embed']:.2f}, imprinting "
        f"{seconds['imprint']:.3f}, fitting the new columns "
        f"{seconds['fit']:.3f}, head fine-tuning {seconds['finetune']:.2f}")
  if "export" in result:
    print(f"saved_model: {result['export']['saved_model']}")


def run():
  common.run_config_main(ExtendConfig, main)


if __name__ == "__main__":
  run()
