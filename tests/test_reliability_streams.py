"""imgrec-stream and imgrec-predict as a hostile or careless user meets them.

Issue 22, items 3, 4, 6, 9, 10, 11 and 14 for streams: an output never
destroys an input, every output type is checked before anything is read,
frames are refused by size from the header, memory stays flat over a long
stream, and the exit status says whether frames were lost (1) or nothing
was classified (2). The in-process tests run the commands' `main`; the
`slow` ones run the commands as a person does.
"""

import http.server
import math
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import tracemalloc

import av
import numpy as np
import pytest
from PIL import Image

from imgrec import config as config_lib
from imgrec.cli import predict as predict_cli
from imgrec.cli import stream as stream_cli
from imgrec.config import PredictConfig
from imgrec.config import StreamConfig
from imgrec.data import video as video_reader
from imgrec.errors import ImgrecError
from imgrec.inference import classifier as classifier_lib
from imgrec.inference import stream
from imgrec.inference import video
from test_reliability import assert_one_line_error
from test_reliability import run_cli
from test_stream import CLASSES
from test_stream import _frames
from test_stream import color_model  # pylint: disable=unused-import
from test_stream import write_video


def _run(main, config, *args):
  """Runs a command's `main` here as `run_config_main` would: (exit code,
  the error line or None)."""
  try:
    main(config.validate(check_files=False), ["imgrec", *args])
  except ImgrecError as e:
    return 2, str(e)
  except SystemExit as e:
    return e.code, None
  return 0, None


def _stream(*args, **fields):
  return _run(stream_cli.main, StreamConfig(**fields), *args)


@pytest.fixture
def clip(tmp_path):
  """A 100-frame 32x32 video: red, green, blue."""
  os.makedirs(tmp_path / "vid")
  return write_video(tmp_path / "vid" / "self.mp4",
                     [f for _, f in _frames()])


def _digest(path):
  with open(path, "rb") as f:
    return f.read()


# --- 3, 4: an output never destroys what the user owns ------------------------


def test_out_that_is_the_source_is_refused(color_model, clip, tmp_path):
  before = _digest(clip)
  os.symlink(clip, tmp_path / "link.mp4")
  for out in (clip, str(tmp_path / "link.mp4"),
              os.path.relpath(clip)):
    code, error = _stream(clip, model=color_model, out=out, overwrite=True)
    assert code == 2 and "also an input" in error, error
  # The model is an input too.
  code, error = _stream(clip, model=color_model, out=color_model,
                        overwrite=True)
  assert code == 2 and "also an input" in error
  assert _digest(clip) == before
  assert sorted(os.listdir(tmp_path / "vid")) == ["self.mp4"]


def test_existing_out_is_replaced_only_with_overwrite(color_model, clip,
                                                      tmp_path):
  out = tmp_path / "mine.mp4"
  out.write_bytes(b"my own video")
  code, error = _stream(clip, model=color_model, out=str(out))
  assert code == 2 and "--overwrite" in error
  assert out.read_bytes() == b"my own video"
  assert _stream(clip, model=color_model, out=str(out),
                 overwrite=True) == (0, None)
  assert len(list(video.frames(str(out)))) == 100


def test_out_to_stdout_or_into_the_frames_folder_is_refused(color_model,
                                                            tmp_path):
  folder = tmp_path / "frames"
  folder.mkdir()
  for i, (_, rgb) in enumerate(_frames()[:10]):
    Image.fromarray(rgb).save(folder / f"{i}.png")
  code, error = _stream(str(folder), model=color_model, out="-")
  assert code == 2 and "stdout" in error
  for name in ("new/", ".", ".."):
    code, error = _stream(str(folder), model=color_model,
                          out=os.path.join(str(tmp_path), name))
    assert code == 2 and "names a folder" in error, name
  code, error = _stream(str(folder), model=color_model,
                        out=str(folder / "labelled.mp4"))
  assert code == 2 and "inside the frames folder" in error
  assert len(os.listdir(folder)) == 10


def test_out_device_and_fifo_are_written_into(color_model, clip, tmp_path):
  # /dev/null stays the system's device (never renamed over).
  assert _stream(clip, model=color_model, out=os.devnull) == (0, None)
  assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
  fifo = tmp_path / "pipe.mp4"
  os.mkfifo(fifo)
  got = []
  reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
  reader.start()
  assert _stream(clip, model=color_model, out=str(fifo)) == (0, None)
  reader.join(30)
  assert stat.S_ISFIFO(os.stat(fifo).st_mode)
  piped = tmp_path / "piped.mp4"
  piped.write_bytes(got[0])
  assert len(list(video.frames(str(piped)))) == 100


def test_two_runs_writing_one_out_never_clobber(tmp_path):
  out = str(tmp_path / "same.mp4")
  first, second = (video.AnnotatedWriter(out, 25) for _ in range(2))
  for writer, value in ((first, 50), (second, 200)):
    writer.write(np.full((16, 16, 3), value, np.uint8), "")
  first.close()
  with pytest.raises(ImgrecError, match="appeared while this run wrote it"):
    second.close()
  assert os.listdir(tmp_path) == ["same.mp4"]
  assert next(video.frames(out)).rgb[14:].mean() < 100  # The first's.
  third = video.AnnotatedWriter(out, 25, overwrite=True)
  third.write(np.full((16, 16, 3), 200, np.uint8), "")
  third.close()
  assert next(video.frames(out)).rgb[14:].mean() > 150
  assert os.listdir(tmp_path) == ["same.mp4"]


# --- 6: every output type is checked first; odd sizes are padded --------------


@pytest.mark.parametrize("name", ["out.xyz", "x.png", "noext."])
def test_unknown_output_type_is_one_line_before_reading(color_model, name,
                                                        tmp_path):
  missing = str(tmp_path / "missing.mp4")  # Never reached.
  code, error = _stream(missing, model=color_model,
                        out=str(tmp_path / name))
  assert code == 2 and "not a video type imgrec writes" in error, error
  assert ".mp4" in error and os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["x.webm", "x.gif", "x.mkv", "x.avi",
                                  "x.mov"])
def test_every_listed_output_type_is_written(color_model, clip, tmp_path,
                                             name):
  out = tmp_path / name
  assert _stream(clip, model=color_model, out=str(out), every=4) == (0, None)
  written = list(video.frames(str(out)))
  assert len(written) == 25 and written[0].rgb.shape[:2] == (32, 32)


def test_one_pixel_wide_video_with_out(color_model, tmp_path):
  thin = str(tmp_path / "thin.mkv")
  with av.open(thin, "w") as container:
    s = container.add_stream("libx264", rate=25)
    s.width, s.height, s.pix_fmt = 1, 16, "yuv444p"
    for _ in range(10):
      frame = av.VideoFrame.from_ndarray(np.full((16, 1, 3), 200, np.uint8),
                                         format="rgb24")
      for packet in s.encode(frame):
        container.mux(packet)
    for packet in s.encode():
      container.mux(packet)
  out = str(tmp_path / "out.mp4")
  assert _stream(thin, model=color_model, out=out) == (0, None)
  written = list(video.frames(out))
  assert len(written) == 10 and written[0].rgb.shape == (16, 2, 3)


def test_writer_fits_frames_that_change_size_and_scales_huge_ones(tmp_path):
  writer = video.AnnotatedWriter(str(tmp_path / "o.mkv"), 25)
  big = writer.fit(np.zeros((1801, 2401, 3), np.uint8))  # 4.3 MP.
  assert big.shape[0] * big.shape[1] <= video.OUT_MAX_PIXELS * 1.01
  assert big.shape[0] % 2 == 0 and big.shape[1] % 2 == 0
  writer.write(big, "a")
  writer.write(np.zeros((30, 30, 3), np.uint8), "b")  # Another size.
  writer.close()
  sizes = {f.rgb.shape for f in video.frames(str(tmp_path / "o.mkv"))}
  assert sizes == {big.shape}


# --- 9: pixel limits from the header, bounded queues ---------------------------


def test_frames_over_the_pixel_limit_are_refused_from_the_header(
    color_model, clip):
  code, error = _stream(clip, model=color_model, max_image_pixels=500)
  assert code == 2 and "32x32" in error and "--max_image_pixels" in error
  # The library refuses before yielding a frame.
  with pytest.raises(ImgrecError, match="above the limit of 500"):
    next(video.frames(clip, max_pixels=500))


def _ts(path, size, count):
  with av.open(str(path), "w", format="mpegts") as container:
    s = container.add_stream("mpeg4", rate=25)
    s.width = s.height = size
    s.pix_fmt = "yuv420p"
    for i in range(count):
      frame = av.VideoFrame.from_ndarray(
          np.full((size, size, 3), 10 * i, np.uint8), format="rgb24")
      for packet in s.encode(frame):
        container.mux(packet)
    for packet in s.encode():
      container.mux(packet)
  return path.read_bytes()


def test_a_stream_that_grows_mid_way_loses_the_large_frames(tmp_path):
  # MPEG-TS files concatenate: 16x16 frames, then 64x64 ones.
  path = tmp_path / "grows.ts"
  path.write_bytes(_ts(tmp_path / "a.ts", 16, 10) +
                   _ts(tmp_path / "b.ts", 64, 10))
  losses = video.Losses()
  read = list(video.frames(str(path), max_pixels=300, losses=losses))
  assert len(read) == 10 and {f.rgb.shape for f in read} == {(16, 16, 3)}
  assert losses.lost == 10 and "64x64" in losses.describe("grows.ts")


def test_frame_files_over_the_limit_are_lost_frames(color_model, tmp_path):
  folder = tmp_path / "frames"
  folder.mkdir()
  for i, (_, rgb) in enumerate(_frames()[:6]):
    Image.fromarray(rgb).save(folder / f"{i}.png")
  Image.new("RGB", (64, 64)).save(folder / "6.png")
  code, _ = _stream(str(folder), model=color_model, max_image_pixels=2000)
  assert code == 1


_PEAK = """
import resource, runpy, sys
sys.argv = ["imgrec-stream"] + sys.argv[1:]
try:
  runpy.run_module("imgrec.cli.stream", run_name="__main__")
finally:
  print("peak_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        file=sys.stderr)
"""


@pytest.mark.slow  # Decodes twelve 8192x8192 frames (2.6 GB at the peak).
def test_huge_frames_stream_in_bounded_memory(color_model, tmp_path):
  path = str(tmp_path / "huge8k.mp4")  # 199 KB.
  with av.open(path, "w") as container:
    s = container.add_stream("libx264", rate=25, options={
        "preset": "ultrafast"})
    s.width = s.height = 8192
    s.pix_fmt = "yuv420p"
    frame = av.VideoFrame.from_ndarray(np.zeros((8192, 8192, 3), np.uint8),
                                       format="rgb24").reformat(
                                           format="yuv420p")
    for i in range(12):
      frame.pts = i
      for packet in s.encode(frame):
        container.mux(packet)
    for packet in s.encode():
      container.mux(packet)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")

  def run(*args):
    proc = subprocess.run([sys.executable, "-c", _PEAK,
                           f"--model={color_model}", *args, path],
                          capture_output=True, text=True, env=env,
                          timeout=300)
    peak = int(proc.stderr.rsplit("peak_kb", 1)[1]) * 1024
    return proc, peak

  refused, _ = run("--max_image_pixels=50000000")
  assert refused.returncode == 2 and "8192x8192" in refused.stderr
  proc, peak = run()
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "12 frames" in proc.stderr
  # A 32-frame queue and 16-frame batches made it 5.9 GB.
  assert peak < 4e9, peak


def test_prefetch_and_batches_are_bounded_in_bytes(monkeypatch):
  made = []

  def megabyte_frames(count):
    for i in range(count):
      made.append(i)
      yield video.Frame(i / 25, i, np.zeros((512, 512, 4), np.uint8))

  ahead = []
  for frame in stream.prefetched(megabyte_frames(40), depth=32,
                                 max_bytes=3 << 20):
    time.sleep(0.002)  # The reader runs ahead as far as it may.
    ahead.append(len(made) - frame.index)
  assert max(ahead) <= 5  # 3 MB waiting, one in the reader's hands.

  class Recording:
    class_names = CLASSES

    def __init__(self):
      self.batches = []

    def predict_proba(self, images):
      self.batches.append(len(images))
      return np.tile([[0.8, 0.1, 0.1]], (len(images), 1))

  monkeypatch.setattr(stream, "BATCH_BYTES", 3 << 20)
  clf = Recording()
  rows = list(stream.classify_stream(clf, megabyte_frames(20),
                                     batch_size=16))
  assert len(rows) == 20 and max(clf.batches) == 3


# --- 10: constant memory over a long stream ------------------------------------


class _FakeClassifier:
  """Names a frame by its first pixel: 0 blue, 1 green, 2 red."""
  class_names = CLASSES
  clip_frames = None

  def predict_proba(self, images):
    out = np.full((len(images), 3), 0.05)
    for row, image in zip(out, images):
      row[int(image[0, 0, 0])] = 0.9
    return out


def _camera(count, fps=25.0):
  """`count` 8x8 frames whose label changes every 2 s."""
  for i in range(count):
    label = (i // int(2 * fps)) % 3
    yield video.Frame(i / fps, i, np.full((8, 8, 3), label, np.uint8))


def test_memory_stays_flat_over_a_long_stream(monkeypatch, tmp_path):
  monkeypatch.setattr(classifier_lib.Classifier, "load",
                      classmethod(lambda cls, *a, **k: _FakeClassifier()))
  monkeypatch.setattr(video, "frames", lambda source, **k: _camera(
      int(source)))
  monkeypatch.setattr(sys, "stdout", open(os.devnull, "w"))
  # The frames kept for --out are measured; drawing and encoding are not.
  monkeypatch.setattr(video.AnnotatedWriter, "write", lambda *a: None)

  def peak(count):
    tracemalloc.reset_peak()
    out = str(tmp_path / f"{count}.mkv")
    assert _stream(str(count), model="m", out=out, format="jsonl",
                   realtime=False) == (0, None)
    return tracemalloc.get_traced_memory()[1]

  tracemalloc.start()
  try:
    peak(200)  # Imports and caches.
    short, long = peak(500), peak(5000)
  finally:
    tracemalloc.stop()
  # Rows kept to the end cost about 0.6 KB a frame: 2.7 MB here.
  assert long - short < 300_000, (short, long)


def test_segments_come_out_as_they_close():
  read = []

  def frames():
    for frame in _camera(600):
      read.append(frame.index)
      yield frame

  rows = stream.classify_stream(_FakeClassifier(), frames(), window=0.1,
                                min_hold=0.1, backdate=True)
  first = next(item for item in stream.with_segments(rows)
               if item.get("segment"))
  assert first["label"] == "blue" and first["end"] == pytest.approx(2.0)
  # Decided 2 s in (frame 50), not at the end of the 600 frames.
  assert len(read) < 150


def test_realtime_lags_are_a_bounded_sample():
  sample = stream._Sample(size=100)  # pylint: disable=protected-access
  for i in range(10_000):
    sample.add(i / 1000)
  assert len(sample.values) == 100 and sample.max == pytest.approx(9.999)
  assert 3 < np.median(sample.values) < 7


# --- 11: honest exit codes -----------------------------------------------------


def _corrupted_in_the_middle(tmp_path):
  rng = np.random.default_rng(0)
  good = write_video(tmp_path / "good.mp4", [
      rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(40)])
  data = bytearray(_digest(good))
  middle = len(data) // 2
  for i in range(middle, middle + 2000):
    data[i] = (data[i] * 7 + 13) % 256
  path = tmp_path / "corrupt.mp4"
  path.write_bytes(bytes(data))
  return str(path)


def test_video_corrupted_in_the_middle_says_how_many_frames_and_exits_1(
    color_model, tmp_path, capsys):
  path = _corrupted_in_the_middle(tmp_path)
  losses = video.Losses()
  read = len(list(video.frames(path, losses=losses)))
  assert 0 < losses.lost and read + losses.lost == 40
  # Decoding goes on after the damage.
  assert read > 20
  capsys.readouterr()
  code, _ = _stream(path, model=color_model)
  err = capsys.readouterr().err
  assert code == 1
  assert f"lost {losses.lost} of its 40 frames" in err.splitlines()[-1]


def test_stalled_stream_says_so_and_exits_1(color_model, tmp_path,
                                            monkeypatch, capsys):
  rng = np.random.default_rng(0)
  data = _digest(write_video(tmp_path / "s.mkv", [
      rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
      for _ in range(100)]))
  release = threading.Event()

  class Stalling(http.server.BaseHTTPRequestHandler):

    def do_GET(self):  # pylint: disable=invalid-name
      self.send_response(200)
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data[:len(data) // 2])
      self.wfile.flush()
      release.wait(30)  # And then nothing.

    def log_message(self, *args):
      pass

  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  monkeypatch.setattr(video_reader, "_STREAM_TIMEOUT", 1.0)
  try:
    code, _ = _stream(f"http://127.0.0.1:{server.server_port}/s.mkv",
                      model=color_model)
  finally:
    release.set()
    server.shutdown()
  err = capsys.readouterr().err
  assert code == 1
  assert "stopped after" in err and "no data for 1 s" in err


def test_frames_folder_of_junk_exits_2_and_an_empty_one_too(color_model,
                                                            tmp_path):
  junk = tmp_path / "junk"
  junk.mkdir()
  for name in ("1.png", "2.jpg"):
    (junk / name).write_bytes(os.urandom(3000))
  code, error = _stream(str(junk), model=color_model)
  assert code == 2 and "no frame was classified" in error
  assert "lost 2 of its 2 frames" in error
  (tmp_path / "empty").mkdir()
  code, error = _stream(str(tmp_path / "empty"), model=color_model)
  assert code == 2 and "no frames" in error


def _predict(*args, **fields):
  return _run(predict_cli.main, PredictConfig(**fields), *args)


def test_predict_says_how_many_inputs_failed(color_model, tmp_path, capsys):
  good = tmp_path / "good.png"
  Image.fromarray(_frames()[0][1]).save(good)
  junk = tmp_path / "junk.png"
  junk.write_bytes(os.urandom(500))
  assert _predict(str(good), model=color_model) == (0, None)
  capsys.readouterr()
  assert _predict(str(good), str(junk), model=color_model)[0] == 1
  assert "1 of 2 inputs could not be classified" in capsys.readouterr().err
  assert _predict(str(junk), str(junk), model=color_model)[0] == 2
  assert "none of the 2 inputs" in capsys.readouterr().err


def test_predict_on_a_video_with_an_image_model_names_imgrec_stream(
    color_model, clip, tmp_path, capsys):
  code, _ = _predict(clip, model=color_model)
  err = capsys.readouterr().err
  assert code == 2 and f"imgrec-stream --model={color_model} {clip}" in err
  assert "Remove or replace" not in err
  good = tmp_path / "good.png"
  Image.fromarray(_frames()[0][1]).save(good)
  assert _predict(clip, str(good), model=color_model)[0] == 1


# --- 14: every float flag refuses nan and inf; SIGTERM cleans up ---------------


def _float_fields():
  for cls in vars(config_lib).values():
    if (isinstance(cls, type) and issubclass(cls, config_lib.Config)
        and cls is not config_lib.Config):
      for name, kinds in config_lib._field_types(cls).items():  # pylint: disable=protected-access
        if float in kinds:
          yield cls, name


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_float_field_refuses_nan_and_inf(value):
  fields = list(_float_fields())
  assert len(fields) > 20
  for cls, name in fields:
    with pytest.raises(ImgrecError, match=f"--{name}"):
      cls(**{name: value}).validate(check_files=False)


@pytest.mark.slow
@pytest.mark.parametrize("module, args, flag", [
    ("stream", ["--model=m", "--fps=nan", "clip.mp4"], "--fps"),
    ("stream", ["--model=m", "--window=inf", "clip.mp4"], "--window"),
    ("scan", ["--data_dir=x", "--max_bad_fraction=nan"], "--max_bad_fraction"),
    ("train", ["--data_dir=x", "--learning_rate=nan"], "--learning_rate"),
    ("export", ["--model_dir=x", "--max_int8_drop=nan"], "--max_int8_drop"),
    ("faces", ["calibrate", "--model_dir=x", "--target_far=nan"],
     "--target_far"),
    ("faces", ["train", "--data_dir=x", "--model_dir=y", "--margin=inf"],
     "--margin"),
])
def test_float_flags_of_every_command_refuse_nan(module, args, flag):
  assert_one_line_error(run_cli(module, *args), flag)


@pytest.mark.slow
def test_cli_out_that_is_the_source_is_refused(color_model, clip):
  before = _digest(clip)
  proc = run_cli("stream", f"--model={color_model}", f"--out={clip}", clip)
  assert_one_line_error(proc, "also an input")
  assert _digest(clip) == before


@pytest.mark.slow
def test_sigterm_during_out_removes_the_temporary_file(color_model,
                                                       tmp_path):
  rgb = [np.full((16, 16, 3), (200, 20, 20), np.uint8)] * 1500  # 60 s.
  source = write_video(tmp_path / "long.mp4", rgb)
  out_dir = tmp_path / "out"
  out_dir.mkdir()
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
  proc = subprocess.Popen(
      [sys.executable, "-m", "imgrec.cli.stream", f"--model={color_model}",
       "--realtime", f"--out={out_dir / 'labelled.mp4'}", source],
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
  try:
    deadline = time.monotonic() + 120
    while not os.listdir(out_dir) and time.monotonic() < deadline:
      time.sleep(0.2)
    assert os.listdir(out_dir), "the output was never started"
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
  finally:
    proc.kill()
  assert proc.returncode == 143, err[-2000:]
  assert os.listdir(out_dir) == []
  assert "Traceback" not in err and "terminated" in err


def test_output_format_probe_needs_no_file(tmp_path):
  assert video.output_format(str(tmp_path / "a.webm"))[0] == "webm"
  assert video.output_format(os.devnull)[0] == "mp4"
  assert os.listdir(tmp_path) == []
  with pytest.raises(ImgrecError, match=r"\.xyz"):
    video.output_format("a.xyz")
