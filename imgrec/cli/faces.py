"""imgrec-faces: train a face embedder; enroll, identify and verify people.

    imgrec-faces train --data_dir=people --model_dir=runs/faces
    imgrec-faces evaluate --model_dir=runs/faces --data_dir=other_people
    imgrec-faces calibrate --model_dir=runs/faces --gallery=g.json \
        --data_dir=my_people --target_far=0.001
    imgrec-faces enroll --model_dir=runs/faces --gallery=g.json alice/ bob/
    imgrec-faces identify --model_dir=runs/faces --gallery=g.json photo.jpg
    imgrec-faces verify --model_dir=runs/faces a.jpg b.jpg
    imgrec-faces export --model_dir=runs/faces --tflite=float,int8

`train` takes the fields of `imgrec.FaceTrainConfig`, the others those of
`imgrec.FacesConfig`; `imgrec-faces COMMAND --helpfull` lists them.
"""

import json
import sys

from imgrec.cli import common
from imgrec.config import FaceTrainConfig
from imgrec.config import FacesConfig

COMMANDS = ("train", "evaluate", "calibrate", "enroll", "identify", "verify",
            "export")


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


def _train(config, argv):
  common.no_positional(argv)
  from imgrec.faces import train  # pylint: disable=g-import-not-at-top
  result = train.train(config)
  print(f"model_dir: {result['model_dir']}")
  print(f"people: {result['train_people']} trained on, "
        f"{result['val_people']} held out")
  if result["val_eer"] is not None:
    print(f"validation EER (held-out people): {result['val_eer']:.4f}")
  print(f"training time: {result['train_seconds']:.1f} s")


def _main(config, argv):
  config.validate()
  from imgrec.faces import recognize  # pylint: disable=g-import-not-at-top
  command, args = argv[1], argv[2:]
  if command == "evaluate":
    common.no_positional([None] + args)
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
    return
  if command == "calibrate":
    common.no_positional([None] + args)
    c = recognize.calibrate(config)
    if c["warning"]:
      sys.stderr.write(f"imgrec-faces: warning: {c['warning']}.\n")
    print(f"threshold {c['threshold']:.4f}: false accepts {c['far']:.5f} of "
          f"{c['num_impostor']} impostor pairs (95% CI {c['far_ci'][0]:.5f}-"
          f"{c['far_ci'][1]:.5f}), true accepts {c['tar']:.4f} of "
          f"{c['num_genuine']} genuine pairs; saved in {config.gallery}")
    return
  if command == "enroll":
    _, summary = recognize.enroll(config, args)
    _print(config, summary, _enrolled_line)
    _lost([s for row in summary for s in row["skipped"]],
          sum(row["enrolled"] + len(row["skipped"]) for row in summary))
    return
  if command == "identify":
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
    return
  if command == "verify":
    if len(args) != 2:
      common.fail("verify takes two images: imgrec-faces verify "
                  "--model_dir=M A.jpg B.jpg")
    row = recognize.verify(config, *args)
    _print(config, [row], lambda r: f"{'same' if r['same'] else 'different'}"
           f" person (score {r['score']:.3f}, threshold {r['threshold']:.3f}"
           f" from the {r['threshold_source']})")
    return
  if command == "export":
    common.no_positional([None] + args)
    from imgrec.faces import export  # pylint: disable=g-import-not-at-top
    with common.quietly():
      out = export.export_embedder(config.model_dir, config.tflite)
    print(f"saved_model: {out['saved_model']}")
    for path in out["tflite"].values():
      print(f"tflite: {path}")


def run():
  command = sys.argv[1] if len(sys.argv) > 1 else None
  if command not in COMMANDS:
    common.fail(f"Name a command: imgrec-faces {{{','.join(COMMANDS)}}} "
                "[flags] (imgrec-faces COMMAND --helpfull lists the flags).")
  # absl parses flags anywhere on the line; the command stays argv[1].
  if command == "train":
    common.run_config_main(
        FaceTrainConfig, lambda config, argv: _train(config, argv[1:]))
  else:
    common.run_config_main(FacesConfig, _main)


if __name__ == "__main__":
  run()
