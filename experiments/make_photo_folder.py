r"""Builds a folder of JPEG photos (~500x375, or phone-size), one class per source photo.

    python experiments/make_photo_folder.py --source_dir=DIR --out=/tmp/photos
    python experiments/make_photo_folder.py --source_dir=DIR --out=/tmp/phone \
        --size=4032x3024 --per_class=20

Benchmarks of the input pipeline need real photographs (JPEG of natural
images at the size people download), and no such dataset ships with the
project. This takes the photos in --source_dir (for instance the sample
photographs scikit-image ships in `skimage/data`: astronaut, chelsea, coffee,
rocket, ...) and writes, per photo, --per_class random crops (50-100% of the
area, random flip, small brightness change) at --size (500x375; 4032x3024
is what phones write), as JPEG quality 90. Sources are smaller than phone
photos, so phone-size crops are upscaled: right for decode speed, softer
than a real photo. Expect: --out/<photo name>/<00000>.jpg, N classes x
--per_class files.
"""

import os

from absl import app
from absl import flags
import numpy as np
from PIL import Image
from PIL import ImageEnhance

flags.DEFINE_string("source_dir", None, "Folder of source photos.")
flags.DEFINE_string("out", None, "Output folder.")
flags.DEFINE_integer("per_class", 150, "JPEGs per source photo.")
flags.DEFINE_integer("min_side", 300, "Skip sources smaller than this.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("size", "500x375", "WIDTHxHEIGHT of the photos.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  rng = np.random.default_rng(FLAGS.seed)
  width, height = (int(v) for v in FLAGS.size.lower().split("x"))
  names = sorted(os.listdir(FLAGS.source_dir))
  for name in names:
    with Image.open(os.path.join(FLAGS.source_dir, name)) as im:
      if im.mode not in ("RGB",) or min(im.size) < FLAGS.min_side:
        print(f"skip {name}: {im.mode} {im.size}")
        continue
      im = im.convert("RGB")
      out_dir = os.path.join(FLAGS.out, os.path.splitext(name)[0])
      os.makedirs(out_dir, exist_ok=True)
      w, h = im.size
      for i in range(FLAGS.per_class):
        scale = np.sqrt(rng.uniform(0.5, 1.0))
        cw, ch = int(w * scale), int(h * scale)
        ch = min(ch, int(cw * height / width)) or ch
        x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        crop = im.crop((x, y, x + cw, y + ch)).resize((width, height),
                                                      Image.BICUBIC)
        if rng.random() < 0.5:
          crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crop = ImageEnhance.Brightness(crop).enhance(rng.uniform(0.8, 1.2))
        crop.save(os.path.join(out_dir, f"{i:05d}.jpg"), quality=90)
      print(f"{name}: {FLAGS.per_class} images")


if __name__ == "__main__":
  flags.mark_flags_as_required(["source_dir", "out"])
  app.run(main)
