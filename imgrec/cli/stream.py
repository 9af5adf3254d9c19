"""imgrec-stream: classifies a video, a folder of frames or a stream, steadily.

    imgrec-stream --model=runs/x/export/model.tflite clip.mp4
    imgrec-stream --model=runs/x --fps=5 --format=jsonl frames/
    imgrec-stream --model=model.tflite --realtime 0    # camera 0, live
    imgrec-stream --model=model.tflite --out=labelled.mp4 clip.mp4

Prints each steady segment as soon as it closes (table), or with
--format=jsonl one JSON line a frame ({"t", "frame", "label", "score",
"smoothed_label", "smoothed_score"}) and, as each segment closes, one
{"segment": true, "start", "end", "label", "score"}. Only the last few
seconds of frames are held, so a camera can run for days in flat memory.
With --realtime each frame line has "lag" (seconds behind the source) and
a last line {"realtime": {"frames", "classified", "dropped", "fps",
"lag_s"}} sums the run up.

--out writes the frames with their steady label drawn on them; the suffix
picks the type (.mp4, .mkv, .mov, .avi, .webm, .gif), checked before
anything is read. An input is never overwritten, an existing file only with
--overwrite; a FIFO or device is written into.

Exit status: 0 when every frame of the source was read and classified; 1
when some were lost (damaged, over --max_image_pixels, or the stream
stopped early), the others classified, and one line on stderr says how
many; 2 when nothing was classified, or on an error (one line on stderr);
130 on Ctrl-C and 143 on SIGTERM (an unfinished --out is removed).
"""

import json
import os
import sys

from imgrec import fileio
from imgrec.cli import common
from imgrec.config import StreamConfig
from imgrec.errors import ImgrecError


def _check_out(config, source):
  """Refuses an --out that would destroy something, before anything is read."""
  out = config.out
  if out == "-":
    raise ImgrecError("--out=- is not supported: stdout carries the labels. "
                      "Pass a video file, or a FIFO (mkfifo) to pipe the "
                      "video.")
  if os.path.basename(out.rstrip(os.sep)) in ("", ".", "..") or out.endswith(
      os.sep):
    raise ImgrecError(f"--out={out} names a folder; pass a video file path "
                      "(labelled.mp4).")
  fileio.check_output(out, flag="--out", inputs=[source, config.model],
                      overwrite=config.overwrite)
  if os.path.isdir(source):
    folder = os.path.realpath(source)
    parent = os.path.realpath(os.path.dirname(os.path.abspath(out)))
    if os.path.commonpath([folder, parent]) == folder:
      raise ImgrecError(f"--out={out} is inside the frames folder {source} "
                        "being read. Write it outside that folder.")


def _segment_line(segment, format_):
  if format_ == "jsonl":
    return json.dumps(segment)
  return (f"{segment['start']:9.2f} s - {segment['end']:9.2f} s  "
          f"{segment['label']}  ({segment['score']:.3f})")


def _writer(config, source):
  """The --out writer, tried before anything is read; None without --out."""
  if not config.out:
    return None
  from imgrec.inference import video  # pylint: disable=g-import-not-at-top
  _check_out(config, source)
  return video.AnnotatedWriter(config.out, config.fps or config.frame_rate,
                               overwrite=config.overwrite)


def _classifier(config):
  """The model, refused when it cannot label frames."""
  from imgrec.inference.classifier import Classifier  # pylint: disable=g-import-not-at-top
  clf = Classifier.load(config.model, num_threads=config.num_threads)
  if clf.clip_frames:
    common.fail(f"{config.model} is a clip model (it labels whole clips of "
                f"{clf.clip_frames} frames): classify video files with "
                f"imgrec-predict --model={config.model} VIDEO...")
  if not clf.class_names:
    common.fail(f"{config.model} names no classes: put its labels.txt "
                "beside it.")
  return clf


def _progress_bar(source):
  if not sys.stderr.isatty():
    return None
  import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm.tqdm(desc=source, unit="frame", leave=False, file=sys.stderr)


def _print_rows(items, config, bar):
  """Prints segments as they close (and rows with jsonl); returns (frames,
  raw label changes, segments)."""
  count = raw = segments = 0
  last_label = None
  for item in items:
    if item.get("segment"):
      segments += 1
      print(_segment_line(item, config.format), flush=True)
      continue
    count += 1
    # A frame's raw answer: its label, or its set of labels.
    label = item["label"] if "label" in item else frozenset(item["labels"])
    raw += last_label is not None and label != last_label
    last_label = label
    if bar is not None:
      bar.update(1)
    if config.format == "jsonl":
      print(json.dumps(item), flush=True)
  return count, raw, segments


def _report_realtime(stats, config):
  lag = stats["lag_s"]
  if config.format == "jsonl":
    print(json.dumps({"realtime": stats}))
  sys.stderr.write(
      f"imgrec-stream --realtime: {stats['fps']} frames/s classified, "
      f"{stats['dropped']} of {stats['frames']} frames dropped, behind the "
      f"source by {lag['median']} s (median), {lag['p90']} s (p90), "
      f"{lag['max']} s (max)\n")


def main(config, argv):
  if len(argv) != 2:
    common.fail("Pass one source: a video file, a folder of frames, a camera "
                "index or a stream URL: imgrec-stream --model=M SOURCE")
  source = argv[1]
  from imgrec.inference import stream  # pylint: disable=g-import-not-at-top
  from imgrec.inference import video  # pylint: disable=g-import-not-at-top
  writer = _writer(config, source)
  clf = _classifier(config)
  losses = video.Losses()
  frames = video.frames(source, fps=config.fps, every=config.every,
                        frame_rate=config.frame_rate,
                        max_pixels=config.max_image_pixels, losses=losses)
  bar = _progress_bar(source)
  stats = {}
  count = 0
  try:
    rows = stream.classify_stream(
        clf, frames, batch_size=config.batch_size, mode=config.smoothing,
        window=config.window, min_hold=config.min_hold,
        realtime=config.realtime, paced=_is_file(source), stats=stats,
        backdate=config.backdate and not config.realtime,
        # Frames wait for their steady label at the output's size.
        keep=writer.fit if writer else None)
    if writer:
      rows = stream.annotated(rows, writer)
    count, raw, segments = _print_rows(stream.with_segments(rows), config,
                                       bar)
  finally:
    if bar is not None:
      bar.close()
    if writer:
      writer.close(failed=not count)
  if not count:
    raise ImgrecError(f"no frame was classified: {losses.describe(source)}")
  sys.stderr.write(f"imgrec-stream: {count} frames, label changes: "
                   f"{raw} raw, {max(segments - 1, 0)} steady\n")
  if config.realtime:
    _report_realtime(stats, config)
  if losses:
    sys.stderr.write(f"imgrec-stream: {losses.describe(source)}\n")
    sys.exit(1)


def _is_file(source):
  """True for a file or folder of frames; False for a camera or a URL."""
  return not (source.isdigit() or "://" in source)


def run():
  common.run_config_main(StreamConfig, main,
                         tensorflow=common.model_needs_tensorflow)


if __name__ == "__main__":
  run()
