"""imgrec-faces: train a face embedder; enroll, identify and verify people.

    imgrec-faces train --data_dir=people --model_dir=runs/faces
    imgrec-faces evaluate --model_dir=runs/faces --data_dir=other_people
    imgrec-faces calibrate --model_dir=runs/faces --gallery=g.json \
        --data_dir=my_people --target_far=0.001
    imgrec-faces enroll --model_dir=runs/faces --gallery=g.json alice/ bob/
    imgrec-faces identify --model_dir=runs/faces --gallery=g.json photo.jpg
    imgrec-faces verify --model_dir=runs/faces a.jpg b.jpg
    imgrec-faces export --model_dir=runs/faces --tflite=float,int8

Each command has its own flags, the fields of its record in `imgrec.config`
(`train`: FaceTrainConfig, trained by the one trainer as `imgrec-train`
trains; `evaluate`: FaceEvaluateConfig, and so on);
`imgrec-faces COMMAND --helpfull` lists them.
"""

import json
import sys

from imgrec import config as config_lib
from imgrec.cli import common


def _print(config, rows, table):
  for row in rows:
    if config.format == "json":
      print(json.dumps(row), flush=True)
    else:
      print(table(row), flush=True)


def _lost(rows, what):
  """Exits as the other commands do when photos were lost: 2 when none
  was used, 1 (after saying how many) when some were."""
  if not rows:
    return
  if len(rows) == what:
    common.fail(f"none of the {what} photos gave a usable face (each is "
                "listed above).")
  sys.stderr.write(f"imgrec-faces: {len(rows)} of {what} photos gave no "
                   "usable face and were skipped (each is listed above).\n")
  sys.exit(1)


def _enrolled_line(row):
  parts = [f"{row['person']}: {row['enrolled']} images enrolled"]
  if row["duplicates"]:
    parts.append(f"{len(row['duplicates'])} already enrolled (as "
                 + ", ".join(sorted({repr(h) for _, h in row["duplicates"]}))
                 + ")")
  if row["skipped"]:
    parts.append(f"{len(row['skipped'])} skipped ("
                 + "; ".join(f"{p}: {s}" for p, s, _ in row["skipped"]) + ")")
  return ", ".join(parts)


def _train(config, args):
  common.no_positional([None] + args)
  from imgrec.training import trainer  # pylint: disable=g-import-not-at-top
  result = trainer.train(config)
  if common.training_went_elsewhere(result, "imgrec-faces"):
    return
  print(f"model_dir: {result['model_dir']}")
  print(f"people: {result['train_people']} trained on, "
        f"{result['val_people']} held out")
  if result["val_eer"] is not None:
    print(f"validation EER (held-out people): {result['val_eer']:.4f}")
  print(f"training time: {result['train_seconds']:.1f} s")


def _evaluate(config, args):
  common.no_positional([None] + args)
  from imgrec.faces import recognize  # pylint: disable=g-import-not-at-top
  report = recognize.evaluate(config)
  if config.format == "json":
    print(json.dumps(report))
    return
  v = report["verification"]
  print(f"people: {report['num_people']}, images: {report['num_images']}"
        f" ({len(report['skipped'])} skipped)")
  print(f"verification: ROC AUC {v['roc_auc']:.4f}, EER {v['eer']:.4f} "
        f"(95% CI {v['eer_ci'][0]:.4f}-{v['eer_ci'][1]:.4f})")
  for far, t in v["tar_at_far"].items():
    print(f"  TAR at FAR {far}: {t['tar']:.4f} (95% CI {t['ci'][0]:.4f}-"
          f"{t['ci'][1]:.4f}){'' if t['resolved'] else ' (too few impostor pairs to resolve this FAR)'}")
  for key, ident in report["identification"].items():
    print(f"identification, {key.replace('_', ' ')}: rank-1 "
          f"{ident['rank1']:.4f}, rank-5 {ident['rank5']:.4f}")
  if report["open_set"]:
    for far, d in report["open_set"]["dir_at_far"].items():
      print(f"open set: detection and identification rate at FAR {far}: "
            f"{d['dir']:.4f}")


def _calibrate(config, args):
  common.no_positional([None] + args)
  from imgrec.faces import recognize  # pylint: disable=g-import-not-at-top
  c = recognize.calibrate(config)
  if c["warning"]:
    sys.stderr.write(f"imgrec-faces: warning: {c['warning']}.\n")
  print(f"threshold {c['threshold']:.4f}: false accepts {c['far']:.5f} of "
        f"{c['num_impostor']} impostor pairs (95% CI {c['far_ci'][0]:.5f}-"
        f"{c['far_ci'][1]:.5f}), true accepts {c['tar']:.4f} of "
        f"{c['num_genuine']} genuine pairs; saved in {config.gallery}")


def _enroll(config, args):
  from imgrec.faces import recognize  # pylint: disable=g-import-not-at-top
  _, summary = recognize.enroll(config, args)
  _print(config, summary, _enrolled_line)
  _lost([s for row in summary for s in row["skipped"]],
        sum(row["enrolled"] + len(row["skipped"]) for row in summary))


def _identify(config, args):
  from imgrec.faces import recognize  # pylint: disable=g-import-not-at-top
  rows = recognize.identify(config, args)
  decided = [r for r in rows if "error" not in r]
  if decided and config.format == "table":
    print(f"threshold {decided[0]['threshold']:.3f} "
          f"({decided[0]['threshold_source']})")
  _print(config, rows, lambda r: f"{r['source']}: " + (
      r["error"] if "error" in r else
      f"{r['identity']} ({r['score']:.3f}); next: " + ", ".join(
          f"{n} {s:.3f}" for n, s in r["rank"][1:3])))
  _lost([r for r in rows if "error" in r], len(rows))


def _verify(config, args):
  if len(args) != 2:
    common.fail("verify takes two images: imgrec-faces verify "
                "--model_dir=M A.jpg B.jpg")
  from imgrec.faces import recognize  # pylint: disable=g-import-not-at-top
  row = recognize.verify(config, *args)
  _print(config, [row], lambda r: f"{'same' if r['same'] else 'different'}"
         f" person (score {r['score']:.3f}, threshold {r['threshold']:.3f}"
         f" from the {r['threshold_source']})")


def _export(config, args):
  common.no_positional([None] + args)
  from imgrec.faces import export  # pylint: disable=g-import-not-at-top
  with common.quietly():
    out = export.export_embedder(config.model_dir, config.tflite)
  print(f"saved_model: {out['saved_model']}")
  for path in out["tflite"].values():
    print(f"tflite: {path}")
  for path in out["face_detector"].values():
    print(f"face detector: {path}")


# Each command: its record (its flags) and what it does with the record and
# the arguments after the command's name.
COMMANDS = {
    "train": (config_lib.FaceTrainConfig, _train),
    "evaluate": (config_lib.FaceEvaluateConfig, _evaluate),
    "calibrate": (config_lib.FaceCalibrateConfig, _calibrate),
    "enroll": (config_lib.FaceEnrollConfig, _enroll),
    "identify": (config_lib.FaceIdentifyConfig, _identify),
    "verify": (config_lib.FaceVerifyConfig, _verify),
    "export": (config_lib.FaceExportConfig, _export),
}


def run():
  command = sys.argv[1] if len(sys.argv) > 1 else None
  if command not in COMMANDS:
    common.fail(f"Name a command: imgrec-faces {{{','.join(COMMANDS)}}} "
                "[flags] (imgrec-faces COMMAND --helpfull lists the flags).")
  record, main = COMMANDS[command]
  # absl parses flags anywhere on the line; the command stays argv[1].
  common.run_config_main(record, lambda config, argv: main(config, argv[2:]),
                         tensorflow=_needs_tensorflow)


def _needs_tensorflow(config):
  """TFLite embedders run on LiteRT alone, and so does the face detector
  when the export holds its TFLite files (an older export detects with the
  Keras MTCNN); training and the other runtimes are Keras models."""
  if getattr(config, "runtime", None) != "tflite":
    return True
  if not getattr(config, "detect", True):
    return False
  from imgrec.inference import face_detect_lite  # pylint: disable=g-import-not-at-top
  from imgrec.run_folder import RunFolder  # pylint: disable=g-import-not-at-top
  return not face_detect_lite.has_detector(
      RunFolder(config.model_dir).export_dir)


if __name__ == "__main__":
  run()
