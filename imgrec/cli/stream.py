"""imgrec-stream: classifies a video, a folder of frames or a stream, steadily.

    imgrec-stream --model=runs/x/export/model.tflite clip.mp4
    imgrec-stream --model=runs/x --fps=5 --format=jsonl frames/

Prints the steady segments (table), or with --format=jsonl one JSON line a
frame ({"t", "frame", "label", "score", "smoothed_label", "smoothed_score"})
and then one a segment ({"segment": true, "start", "end", "label",
"score"}).
"""

import json
import sys

from imgrec.cli import common
from imgrec.config import StreamConfig


def main(config, argv):
  if len(argv) != 2:
    common.fail("Pass one source: a video file, a folder of frames, a camera "
                "index or a stream URL: imgrec-stream --model=M SOURCE")
  from imgrec.inference import stream  # pylint: disable=g-import-not-at-top
  from imgrec.inference import video  # pylint: disable=g-import-not-at-top
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  clf = Classifier.load(config.model, num_threads=config.num_threads)
  if not clf.class_names:
    common.fail(f"{config.model} names no classes: put its labels.txt "
                "beside it.")
  frames = video.frames(argv[1], fps=config.fps, every=config.every,
                        frame_rate=config.frame_rate)
  rows = []
  for row in stream.classify_stream(
      clf, frames, batch_size=config.batch_size, mode=config.smoothing,
      window=config.window, min_hold=config.min_hold):
    rows.append(row)
    if config.format == "jsonl":
      print(json.dumps(row), flush=True)
  segments = stream.segments_of(rows)
  for segment in segments:
    if config.format == "jsonl":
      print(json.dumps(segment))
    else:
      print(f"{segment['start']:9.2f} s - {segment['end']:9.2f} s  "
            f"{segment['label']}  ({segment['score']:.3f})")
  raw = sum(a["label"] != b["label"] for a, b in zip(rows, rows[1:]))
  steady = max(len(segments) - 1, 0)
  sys.stderr.write(f"imgrec-stream: {len(rows)} frames, label changes: "
                   f"{raw} raw, {steady} steady\n")


def run():
  common.run_config_main(StreamConfig, main)


if __name__ == "__main__":
  run()
