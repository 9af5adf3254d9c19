"""Tests for the motion video-clip dataset in imgrec.datasets.motion."""

import json
import os

import numpy as np
import pytest

from imgrec import datasets
from imgrec.datasets import _build
from imgrec.datasets import motion
from imgrec.inference import video

CLIPS, FRAMES, SIZE = 24, 8, 32


@pytest.fixture(scope="module")
def clips_root(tmp_path_factory):
  """24 clips a class of 8 frames of 32x32, the size clip-model tests use."""
  return motion.generate_motion_clips(
      tmp_path_factory.mktemp("motion"), clips_per_class=CLIPS, frames=FRAMES,
      size=SIZE, seed=0)


@pytest.fixture(scope="module")
def masks_by_class(clips_root):
  """The object's masks in each decoded clip of `clips_root`, by class."""
  out = {}
  for class_name in motion.MOTION_CLASSES:
    out[class_name] = [
        _object_masks(
            _decode(os.path.join(clips_root, class_name, f"{index:03d}.mp4")),
            0, "", class_name, index) for index in range(CLIPS)
    ]
  return out


def _files(root):
  """Returns {relative path: bytes} for every non-hidden file under root."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    for name in filenames:
      if not name.startswith("."):
        path = os.path.join(dirpath, name)
        with open(path, "rb") as f:
          out[os.path.relpath(path, root)] = f.read()
  return out


def _ks_distance(a, b):
  """Two-sample Kolmogorov-Smirnov statistic: the largest gap of the CDFs."""
  grid = np.concatenate([a, b])
  cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
  cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
  return np.abs(cdf_a - cdf_b).max()


def _decode(path):
  return np.stack([frame.rgb for frame in video.frames(path)])


def _object_masks(clip, seed, split, class_name, index):
  """Segments the object: pixels nearer its fill colour than the background.

  Both colours come from the generator's spec of the clip; the frames are
  the decoded ones.
  """
  spec = motion._clip_spec(seed, split, class_name, index, len(clip),
                           clip.shape[1])
  clip = clip.astype(np.float64)
  to_fill = np.linalg.norm(clip - spec["fill"], axis=-1)
  to_background = np.linalg.norm(clip - spec["background"], axis=-1)
  return (to_fill < to_background).astype(np.float64)


def _measure(masks):
  """Per-clip motion estimates from object masks (frames, size, size).

  Returns:
    (centroid x per frame in pixels, x speed in pixels a frame, log-area
    change a frame, mean turn a frame in degrees, clockwise on screen).
  """
  size = masks.shape[1]
  yy, xx = np.mgrid[0:size, 0:size] + 0.5
  area = masks.sum(axis=(1, 2))
  cx = (masks * xx).sum(axis=(1, 2)) / area
  cy = (masks * yy).sum(axis=(1, 2)) / area
  dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
  mu20 = (masks * dx * dx).sum(axis=(1, 2))
  mu02 = (masks * dy * dy).sum(axis=(1, 2))
  mu11 = (masks * dx * dy).sum(axis=(1, 2))
  # Principal axis, y pointing down: the angle grows clockwise on screen.
  axis = 0.5 * np.arctan2(2.0 * mu11, mu20 - mu02)
  turns = (np.diff(axis) + np.pi / 2) % np.pi - np.pi / 2
  t = np.arange(len(masks))
  return (cx, np.polyfit(t, cx, 1)[0], np.polyfit(t, np.log(area), 1)[0],
          np.degrees(turns.mean()))


def test_classes_and_pairs():
  assert set(motion.MOTION_PAIRS) == set(motion.MOTION_CLASSES)
  for name, mirror in motion.MOTION_PAIRS.items():
    assert mirror != name and motion.MOTION_PAIRS[mirror] == name
  assert datasets.MOTION_CLASSES is motion.MOTION_CLASSES
  assert datasets.load_motion is motion.load_motion


def test_layout_and_decoded_clips(clips_root):
  assert sorted(os.listdir(clips_root)) == sorted(motion.MOTION_CLASSES)
  for class_name in motion.MOTION_CLASSES:
    names = sorted(os.listdir(os.path.join(clips_root, class_name)))
    assert names == [f"{i:03d}.mp4" for i in range(CLIPS)]
  frames = list(video.frames(os.path.join(clips_root, "clockwise", "003.mp4")))
  assert [f.index for f in frames] == list(range(FRAMES))
  np.testing.assert_allclose([f.t for f in frames],
                             np.arange(FRAMES) / 10.0, atol=1e-6)
  for f in frames:
    assert f.rgb.shape == (SIZE, SIZE, 3) and f.rgb.dtype == np.uint8
  # No two clips are alike, and a sample of them decodes whole.
  files = _files(clips_root)
  assert len(set(files.values())) == len(files) == 6 * CLIPS
  for relpath in list(files)[::11]:
    assert _decode(os.path.join(clips_root, relpath)).shape == (FRAMES, SIZE,
                                                                 SIZE, 3)


def test_splits_layout_and_cache(tmp_path, monkeypatch):
  monkeypatch.setenv(motion.DATA_HOME_ENV, str(tmp_path))
  splits = {"train": 2, "val": 1, "test": 0}
  root = motion.load_motion(splits=splits, frames=4, size=16,
                            classes=("left", "right"), fps=25)

  assert os.path.dirname(root) == str(tmp_path)
  assert os.path.basename(root).startswith(
      f"motion-v{motion.DATASET_VERSION}-s0-16px-4f-")
  assert sorted(os.listdir(root)) == [motion.COMPLETE_MARKER, "train", "val"]
  for split in ("train", "val"):
    assert sorted(os.listdir(os.path.join(root, split))) == ["left", "right"]
    names = sorted(os.listdir(os.path.join(root, split, "right")))
    assert names == [f"{i:03d}.mp4" for i in range(splits[split])]
  with open(os.path.join(root, motion.COMPLETE_MARKER)) as f:
    params = json.load(f)
  assert params["counts"] == {"train": 2, "val": 1}
  assert params["codec"] == motion.default_codec()
  assert os.listdir(tmp_path) == [os.path.basename(root)]
  frames = list(video.frames(os.path.join(root, "val", "left", "000.mp4")))
  assert len(frames) == 4 and frames[1].t == pytest.approx(0.04)

  # The second call finds the finished dataset and writes nothing.
  stamp = os.path.getmtime(os.path.join(root, "train", "left", "000.mp4"))
  assert motion.load_motion(splits=splits, frames=4, size=16,
                            classes=("left", "right"), fps=25) == root
  assert os.path.getmtime(os.path.join(root, "train", "left",
                                       "000.mp4")) == stamp
  # Other parameters get another directory.
  other = motion.load_motion(splits=splits, frames=4, size=16,
                             classes=("left",), fps=25)
  assert other != root


def test_same_seed_same_clips_different_seed_different(tmp_path):
  # 16 clips: enough that the threaded path runs; it must match the serial.
  kwargs = dict(clips_per_class=8, frames=4, size=16,
                classes=("left", "clockwise"))
  first = _files(motion.generate_motion_clips(tmp_path / "a", seed=3,
                                              num_workers=1, **kwargs))
  again = _files(motion.generate_motion_clips(tmp_path / "b", seed=3,
                                              num_workers=2, **kwargs))
  other = _files(motion.generate_motion_clips(tmp_path / "c", seed=4,
                                              **kwargs))
  assert first == again
  assert first.keys() == other.keys()
  for relpath in ("left/000.mp4", "clockwise/007.mp4"):
    a = _decode(tmp_path / "a" / relpath)
    np.testing.assert_array_equal(a, _decode(tmp_path / "b" / relpath))
    assert np.abs(a.astype(int) - _decode(tmp_path / "c" / relpath)).mean() > 10


def test_a_clip_does_not_depend_on_the_other_classes_or_counts(
    tmp_path, clips_root):
  root = motion.generate_motion_clips(tmp_path, clips_per_class=2,
                                      frames=FRAMES, size=SIZE, seed=0,
                                      classes=("recede",))
  assert sorted(os.listdir(root)) == ["recede"]
  ours, theirs = _files(root), _files(clips_root)
  assert ours.items() <= theirs.items()


@pytest.mark.parametrize("codec,suffix", [("libx264", ".mp4"),
                                          ("mpeg4", ".mp4"),
                                          ("ffv1", ".mkv")])
def test_codecs_keep_small_frames(tmp_path, codec, suffix):
  kwargs = dict(clips_per_class=1, frames=FRAMES, size=SIZE, seed=1,
                classes=("approach",), codec=codec)
  root = motion.generate_motion_clips(tmp_path / "a", **kwargs)
  # Same bytes each time, in every container (Matroska included).
  assert _files(root) == _files(
      motion.generate_motion_clips(tmp_path / "b", **kwargs))
  path = os.path.join(root, "approach", "000" + suffix)
  decoded = _decode(path).astype(np.float64)
  rendered = motion.render_clip(1, "", "approach", 0, frames=FRAMES,
                                size=SIZE).astype(np.float64)
  # Luma survives nearly intact (yuv420p halves chroma whatever the codec).
  luma_error = (decoded - rendered) @ _build.LUMA
  psnr = 10 * np.log10(255.0**2 / np.mean(luma_error**2))
  assert psnr > 38, (codec, psnr)


# Which estimate each class moves, and in which direction.
_OWN_MOTION = {
    "left": (0, -1),
    "right": (0, 1),
    "approach": (1, 1),
    "recede": (1, -1),
    "clockwise": (2, 1),
    "counterclockwise": (2, -1),
}


@pytest.mark.slow  # A few seconds of decoding and statistics.
def test_each_class_moves_its_own_way(masks_by_class):
  # Per frame: x shift (px), log-area change, turn (degrees). At 8 frames
  # of 32x32, each clip's own motion is at least 0.56 px, 0.063 and 5
  # degrees a frame as drawn; an object partly out of frame grows less.
  own_bound = (0.4, 0.02, 3.0)
  # Other motions are rasterisation noise: medians under 0.03 / 0.005 / 0.5.
  other_bound = (0.15, 0.015, 1.5)
  for class_name, (own, direction) in _OWN_MOTION.items():
    estimates = np.array(
        [_measure(masks)[1:] for masks in masks_by_class[class_name]])
    assert np.all(direction * estimates[:, own] > own_bound[own]), (
        class_name, estimates[:, own])
    for other in {0, 1, 2} - {own}:
      typical = np.median(np.abs(estimates[:, other]))
      assert typical < other_bound[other], (class_name, other, typical)


@pytest.mark.slow  # A few seconds of decoding and statistics.
def test_decoded_frames_of_mirror_classes_look_alike(masks_by_class):
  mean_x, mean_log_area = {}, {}
  for class_name in ("left", "right", "approach", "recede"):
    clips = masks_by_class[class_name]
    mean_x[class_name] = np.mean([_measure(masks)[0] for masks in clips])
    mean_log_area[class_name] = np.mean(
        [np.log(masks.sum(axis=(1, 2))) for masks in clips])
  # Had a 'right' clip started where a 'left' clip does, the means would
  # differ by a whole path, ~7 px; the log areas of 'approach' and 'recede'
  # clips by ~0.65.
  assert abs(mean_x["left"] - mean_x["right"]) < 4.0, mean_x
  assert abs(mean_log_area["approach"] -
             mean_log_area["recede"]) < 0.25, mean_log_area


@pytest.mark.slow  # A few seconds of decoding and statistics.
@pytest.mark.parametrize("frames", [FRAMES, 16])
def test_a_random_frame_has_the_same_distribution_in_every_class(frames):
  rng = np.random.default_rng(0)
  n = 1500
  samples = {}
  for class_name in motion.MOTION_CLASSES:
    paths = [motion._path(motion._rng(0, "", class_name, i), class_name,
                          frames) for i in range(n)]
    picks = rng.integers(frames, size=n)
    samples[class_name] = {
        key: np.array([p[key][t] for p, t in zip(paths, picks)])
        for key in ("x", "y", "radius", "angle")
    }
    for key in ("x", "radius"):
      samples[class_name]["first_" + key] = np.array([p[key][0] for p in paths])
      samples[class_name]["last_" + key] = np.array([p[key][-1] for p in paths])
  # With 1,500 a class, a KS distance of 0.07 has p ~ 0.001 for equal laws.
  for class_name in motion.MOTION_CLASSES:
    for key in ("x", "y", "radius", "angle"):
      statistic = _ks_distance(samples["left"][key], samples[class_name][key])
      assert statistic < 0.07, (class_name, key, statistic)
    # Played backwards, a clip is distributed like one of its mirror class.
    mirror = samples[motion.MOTION_PAIRS[class_name]]
    for key in ("x", "radius"):
      statistic = _ks_distance(samples[class_name]["first_" + key],
                               mirror["last_" + key])
      assert statistic < 0.07, (class_name, key, statistic)


def test_invalid_arguments_raise(tmp_path):
  with pytest.raises(ValueError, match="even"):
    motion.generate_motion_clips(tmp_path, size=33)
  with pytest.raises(ValueError, match="Unknown motion class"):
    motion.generate_motion_clips(tmp_path, classes=("left", "up"))
  with pytest.raises(ValueError, match="Unknown codec"):
    motion.generate_motion_clips(tmp_path, codec="vp9")
  with pytest.raises(ValueError, match="frames"):
    motion.generate_motion_clips(tmp_path, frames=1)
  with pytest.raises(ValueError, match="at least one clip"):
    motion.generate_motion_clips(tmp_path, splits={"train": 0})
  assert not os.listdir(tmp_path)
