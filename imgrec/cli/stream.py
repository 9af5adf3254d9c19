"""imgrec-stream: classifies a video, a folder of frames or a stream, steadily.

    imgrec-stream --model=runs/x/export/model.tflite clip.mp4
    imgrec-stream --model=runs/x --fps=5 --format=jsonl frames/
    imgrec-stream --model=model.tflite --realtime 0    # camera 0, live

Prints the steady segments (table), or with --format=jsonl one JSON line a
frame ({"t", "frame", "label", "score", "smoothed_label", "smoothed_score"})
and then one a segment ({"segment": true, "start", "end", "label",
"score"}). With --realtime each frame line has "lag" (seconds behind the
source) and a last line {"realtime": {"frames", "classified", "dropped",
"fps", "lag_s"}} sums the run up.
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
  if clf.clip_frames:
    common.fail(f"{config.model} is a clip model (it labels whole clips of "
                f"{clf.clip_frames} frames): classify video files with "
                f"imgrec-predict --model={config.model} VIDEO...")
  if not clf.class_names:
    common.fail(f"{config.model} names no classes: put its labels.txt "
                "beside it.")
  frames = video.frames(argv[1], fps=config.fps, every=config.every,
                        frame_rate=config.frame_rate)
  kept = {}
  if config.out:
    # The frames are drawn once their steady label is known.
    def remember(frames):
      for frame in frames:
        kept[frame.index] = frame.rgb
        yield frame
    frames = remember(frames)
    writer = video.AnnotatedWriter(config.out, config.fps or
                                   config.frame_rate)
  bar = None
  if sys.stderr.isatty():
    import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm.tqdm(desc=argv[1], unit="frame", leave=False,
                    file=sys.stderr)
  rows, stats = [], {}
  failed = True
  try:
    for row in stream.classify_stream(
        clf, frames, batch_size=config.batch_size, mode=config.smoothing,
        window=config.window, min_hold=config.min_hold,
        realtime=config.realtime, paced=_is_file(argv[1]), stats=stats,
        backdate=config.backdate and not config.realtime):
      rows.append(row)
      if bar is not None:
        bar.update(1)
      if config.out:
        # Frames dropped in real time are never drawn: let them go.
        for index in [i for i in list(kept) if i < row["frame"]]:
          del kept[index]
        writer.write(kept.pop(row["frame"]), f"{row['t']:7.2f} s  "
                     f"{row['smoothed_label']} {row['smoothed_score']:.2f}")
      if config.format == "jsonl":
        print(json.dumps(row), flush=True)
    failed = False
  finally:
    if bar is not None:
      bar.close()
    if config.out:
      writer.close(failed=failed)
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
  if config.realtime:
    lag = stats["lag_s"]
    if config.format == "jsonl":
      print(json.dumps({"realtime": stats}))
    sys.stderr.write(
        f"imgrec-stream --realtime: {stats['fps']} frames/s classified, "
        f"{stats['dropped']} of {stats['frames']} frames dropped, behind the "
        f"source by {lag['median']} s (median), {lag['p90']} s (p90), "
        f"{lag['max']} s (max)\n")


def _is_file(source):
  """True for a file or folder of frames; False for a camera or a URL."""
  return not (source.isdigit() or "://" in source)


def run():
  common.run_config_main(StreamConfig, main)


if __name__ == "__main__":
  run()
