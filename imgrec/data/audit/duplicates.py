"""Exact and near duplicates among many images, without comparing all pairs.

    groups, checked = find_groups(digests, windows, blurs, frames)

Exact duplicates share a digest (the same decoded pixels). Near duplicates
are found in two steps:

1. Candidates from an inverted-file index (the IVF of vector search
   libraries): the images' descriptors (`fingerprint.descriptors`) are
   clustered by k-means into about sqrt(N) cells; each image is stored in
   its nearest cell and looks for its `neighbours` most similar images in
   its `probes` nearest cells. Work and memory grow as N^1.5, in blocks.
2. Verification of each candidate pair on the full windows: the largest
   normalized cross-correlation over shifts of one sample either way. A
   resized, re-encoded, slightly cropped or brightened copy of an image
   scores above 0.99 with it; two different images rarely do.

Pairs that pass are joined into groups (union-find).
"""

import concurrent.futures

import numpy as np

from imgrec.data.audit import fingerprint as fingerprint_lib

# Below this many images every pair of descriptors is compared.
BRUTE_FORCE_BELOW = 4096
# Descriptor similarity a candidate pair needs before it is verified.
CANDIDATE_MIN = 0.8
# Near duplicates: one image cropped by at most this share of each side,
# then resized, re-encoded, brightened; frames may err by TOLERANCE of a
# side.
MAX_CROP = 0.1
TOLERANCE = 0.04
# Mean chromaticities (r, g shares) of a pair may differ by this much (a
# crop of a gradient, JPEG's colour subsampling).
COLOUR_TOLERANCE = 0.03
# Window similarities: from NEAR_THRESHOLD a distinct best match (RATIO) is
# a near duplicate, from CERTAIN any match is.
NEAR_THRESHOLD = 0.97
CERTAIN = 0.995
RATIO = 0.2
# Zooms the verification tries on pairs from ZOOM_FROM (see find_groups).
ZOOMS = (1 / 1.1, 1 / 1.05, 1.05, 1.1)
ZOOM_FROM = 0.85
# Extra blur is applied in steps of this many samples.
BLUR_STEP = 0.25
_BLOCK = 1024


class _UnionFind:

  def __init__(self, n):
    self.parent = np.arange(n)

  def find(self, i):
    root = i
    while self.parent[root] != root:
      root = self.parent[root]
    while self.parent[i] != root:
      self.parent[i], i = root, self.parent[i]
    return root

  def union(self, a, b):
    ra, rb = self.find(a), self.find(b)
    if ra != rb:
      self.parent[max(ra, rb)] = min(ra, rb)


def _top_k(queries, x, members, k):
  """(query, member, similarity) arrays of each query's `k` most similar
  `members` (itself left out) at CANDIDATE_MIN or more, in blocks."""
  found = []
  if not len(members) or not len(queries):
    return found
  stored = x[members]
  take = min(k, len(members))
  for start in range(0, len(queries), _BLOCK):
    q = queries[start:start + _BLOCK]
    sims = x[q] @ stored.T
    sims[members[None, :] == q[:, None]] = -np.inf
    top = np.argpartition(-sims, take - 1, axis=1)[:, :take]
    values = np.take_along_axis(sims, top, axis=1)
    keep = values >= CANDIDATE_MIN
    found.append((np.broadcast_to(q[:, None], top.shape)[keep],
                  members[top][keep], values[keep]))
  return found


def _kmeans(x, cells, rng, iterations=8):
  sample = x[rng.choice(len(x), min(len(x), 64 * cells), replace=False)]
  centroids = sample[rng.choice(len(sample), cells, replace=False)].copy()
  for _ in range(iterations):
    assign = np.argmax(sample @ centroids.T, axis=1)
    for c in range(cells):
      chosen = sample[assign == c]
      if len(chosen):
        mean = chosen.mean(axis=0)
        centroids[c] = mean / max(np.linalg.norm(mean), 1e-6)
  return centroids


def candidate_pairs(descriptors, neighbours=5, probes=3, seed=0):
  """Pairs (i, j), i < j, of images among each other's `neighbours` most
  similar descriptors (similarity at least CANDIDATE_MIN).

  Returns:
    int64 [P, 2].
  """
  x = np.asarray(descriptors, np.float32)
  n = len(x)
  everything = np.arange(n)
  if n < BRUTE_FORCE_BELOW:
    found = _top_k(everything, x, everything, neighbours)
  else:
    rng = np.random.default_rng(seed)
    cells = int(np.ceil(np.sqrt(n)))
    centroids = _kmeans(x, cells, rng)
    home = np.empty(n, np.int64)
    probed = np.empty((n, probes), np.int64)
    for start in range(0, n, _BLOCK * 8):
      sims = x[start:start + _BLOCK * 8] @ centroids.T
      order = np.argsort(-sims, axis=1)
      home[start:start + len(sims)] = order[:, 0]
      probed[start:start + len(sims)] = order[:, :probes]
    found = []
    for cell in range(cells):
      found += _top_k(np.flatnonzero((probed == cell).any(axis=1)), x,
                      np.flatnonzero(home == cell), neighbours)
  if not found:
    return np.zeros((0, 2), np.int64)
  query, member, sim = (np.concatenate(parts) for parts in zip(*found))
  # Each query's best `neighbours` across the cells it probed.
  order = np.lexsort((-sim, query))
  query, member = query[order], member[order]
  first = np.searchsorted(query, query, side="left")
  rank = np.arange(len(query)) - first
  query, member = query[rank < neighbours], member[rank < neighbours]
  pairs = np.stack([np.minimum(query, member), np.maximum(query, member)],
                   axis=1)
  return np.unique(pairs, axis=0).astype(np.int64)


def _blur_matrix(sigma, size):
  """[size, size] Gaussian blur along one axis (edges renormalized)."""
  if sigma <= 0:
    return np.eye(size, dtype=np.float32)
  offsets = np.arange(size)[:, None] - np.arange(size)[None, :]
  weights = np.exp(-0.5 * (offsets / sigma) ** 2)
  return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _zoomed(x, zoom):
  """Windows x [P, PADDED, PADDED] enlarged `zoom` [P] times about their
  centres (shrunk below 1), by linear interpolation along each axis."""
  padded = x.shape[1]
  centre = (padded - 1) / 2
  source = centre + (np.arange(padded)[None, :] - centre) / zoom[:, None]
  low = np.clip(np.floor(source).astype(np.int64), 0, padded - 2)
  frac = np.clip(source - low, 0.0, 1.0).astype(np.float32)
  rows = np.arange(len(x))[:, None, None]
  grid = np.arange(padded)[None, None, :]
  # Along y: output row i reads rows low[i] and low[i] + 1.
  x = (x[rows, low[:, :, None], grid] * (1 - frac)[:, :, None]
       + x[rows, low[:, :, None] + 1, grid] * frac[:, :, None])
  return (x[rows, grid.transpose(0, 2, 1), low[:, None, :]]
          * (1 - frac)[:, None, :]
          + x[rows, grid.transpose(0, 2, 1), low[:, None, :] + 1]
          * frac[:, None, :])


def _box_sums(x, size, offsets):
  """Sums of x [P, A, A] over the size x size squares at (m + dy, m + dx)
  for dy, dx in `offsets` (m = MARGIN): [P, len, len]."""
  m = fingerprint_lib.MARGIN
  integral = np.zeros((x.shape[0], x.shape[1] + 1, x.shape[2] + 1))
  integral[:, 1:, 1:] = x.cumsum(axis=1).cumsum(axis=2)
  top = (m + offsets)[:, None]
  left = (m + offsets)[None, :]
  return (integral[:, top + size, left + size] - integral[:, top, left + size]
          - integral[:, top + size, left] + integral[:, top, left])


def _best_ncc(centre, b):
  """The largest normalized cross-correlation of `centre` [P, WINDOW,
  WINDOW] (zero-mean, unit-norm) with the WINDOW squares of b [P, PADDED,
  PADDED] at every whole shift within +-(MARGIN - 1); each square's norm
  from integral images (the centre's zero mean makes the square's own
  mean drop out of the products)."""
  m, size = fingerprint_lib.MARGIN, fingerprint_lib.WINDOW
  offsets = np.arange(-(m - 1), m)
  b = b - b.mean(axis=(1, 2), keepdims=True)
  sums = _box_sums(b, size, offsets)
  squares = _box_sums(b * b, size, offsets)
  norms = np.sqrt(np.maximum(squares - sums * sums / (size * size), 1e-6))
  products = np.empty(norms.shape, np.float32)
  for i, dy in enumerate(offsets):
    for j, dx in enumerate(offsets):
      products[:, i, j] = np.einsum(
          "pij,pij->p", centre,
          b[:, m + dy:m + dy + size, m + dx:m + dx + size])
  return (products / norms).reshape(len(b), -1).max(axis=1)


def window_similarity(windows, blurs, pairs, zooms=(1.0,), block=2048,
                      workers=1):
  """Each pair's largest normalized cross-correlation of the first's
  central window with the second's, shifted by whole samples within
  MARGIN - 1 and enlarged by each of `zooms`. The sharper window is first
  blurred to the other's blur (a copy resized to half is compared with the
  original seen at half the detail).

  Args:
    windows: uint8 [N, PADDED, PADDED].
    blurs: float [N], each window's blur in samples.
    pairs: int [P, 2].
    zooms: enlargements of the second window to try.
    block: pairs compared at a time.
    workers: threads comparing blocks (numpy's loops release the GIL).

  Returns:
    float32 [P].
  """
  m, size = fingerprint_lib.MARGIN, fingerprint_lib.WINDOW
  blurs = np.asarray(blurs, np.float32)
  out = np.full(len(pairs), -1.0, np.float32)
  # The extra blur of the sharper window, in steps of BLUR_STEP samples.
  extra = np.sqrt(np.abs(blurs[pairs[:, 0]] ** 2 - blurs[pairs[:, 1]] ** 2))
  levels = np.rint(extra / BLUR_STEP).astype(np.int64)

  def compare(level, index):
    chunk = pairs[index]
    a = windows[chunk[:, 0]].astype(np.float32)
    b = windows[chunk[:, 1]].astype(np.float32)
    if level:
      blur = _blur_matrix(level * BLUR_STEP, fingerprint_lib.PADDED)
      sharper_a = (blurs[chunk[:, 0]] < blurs[chunk[:, 1]])[:, None, None]
      a = np.where(sharper_a, blur @ a @ blur.T, a)
      b = np.where(sharper_a, b, blur @ b @ blur.T)
    centre = fingerprint_lib.normalized(a[:, m:m + size, m:m + size])
    centre = centre.reshape(len(chunk), size, size)
    best = np.full(len(chunk), -1.0, np.float32)
    for zoom in zooms:
      zoomed = b if zoom == 1 else _zoomed(b, np.full(len(b), zoom))
      # Lined up already (most copies): no shift can do better enough to
      # matter; the others search every shift.
      still = np.einsum("pd,pd->p", centre.reshape(len(chunk), -1),
                        fingerprint_lib.normalized(
                            zoomed[:, m:m + size, m:m + size]))
      search = np.flatnonzero(still < CERTAIN)
      found = still.copy()
      if len(search):
        found[search] = _best_ncc(centre[search], zoomed[search])
      best = np.maximum(best, found)
    out[index] = best  # Blocks never share a pair.

  jobs = []
  for level in np.unique(levels):
    rows = np.flatnonzero(levels == level)
    jobs += [(level, rows[start:start + block])
             for start in range(0, len(rows), block)]
  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
    list(pool.map(lambda job: compare(*job), jobs))
  return out


def _top_two(pairs, sims, n):
  """bool [P]: the pairs that are the best or second-best match of one of
  their images."""
  taken = np.zeros(n, np.int64)
  out = np.zeros(len(pairs), bool)
  for index in np.argsort(-sims, kind="stable"):
    a, b = pairs[index]
    if taken[a] < 2 or taken[b] < 2:
      out[index] = True
    taken[a] += 1
    taken[b] += 1
  return out


def _one_way(a, b, max_crop):
  """Whether frames b [P, 5] can be frames a [P, 5] cropped by at most
  `max_crop` of each side's length, then resized (with TOLERANCE for the
  frames' errors): bool [P]."""
  scale = b[:, 2] / np.maximum(a[:, 2], 1e-6)  # b's pixels per a's pixel.
  ok = np.ones(len(a), bool)
  for centre, side in ((0, 3), (1, 4)):
    kept = b[:, side] / np.maximum(scale * a[:, side], 1e-9)
    start = a[:, centre] - b[:, centre] / np.maximum(scale, 1e-9)
    ok &= (kept >= 1 - max_crop - TOLERANCE) & (kept <= 1 + TOLERANCE)
    ok &= (start >= -TOLERANCE * a[:, side]) & (
        start <= (1 - kept + TOLERANCE) * a[:, side])
  return ok


def same_geometry(a, b, max_crop=MAX_CROP):
  """Whether one of two frames (fingerprint.Fingerprint.frame; or arrays
  [P, 5] of them, pair by pair) can be the other cropped by at most
  `max_crop` of a side and resized."""
  a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(
      np.asarray(b, np.float64))
  out = _one_way(a, b, max_crop) | _one_way(b, a, max_crop)
  return bool(out[0]) if len(out) == 1 else out


def distinct_matches(pairs, sims, n, threshold, certain, ratio=RATIO):
  """Which verified pairs are near duplicates: every pair at `certain` or
  above, and a pair at `threshold` or above that is distinctly the best
  match of one of its images: its distance (1 - similarity) at most `ratio`
  times that image's next best (Lowe's ratio test; an image with one match
  has none next). Among lookalikes (a thousand handwritten 1s) every image
  has many matches almost as good, and a pair of them is not a copy; a copy
  stands apart from the image's other matches. (Several lossy copies of one
  image are each other's runners-up: they join at `certain`.)

  Args:
    pairs: int [P, 2] of images 0..n-1.
    sims: float [P], their window similarities.
    n: images.
    threshold, certain, ratio: as above.

  Returns:
    bool [P].
  """
  best = np.full((n, 2), -1.0)  # Each image's two best similarities.
  for index in np.argsort(-sims, kind="stable"):
    for image in pairs[index]:
      if best[image, 0] < 0:
        best[image, 0] = sims[index]
      elif best[image, 1] < 0:
        best[image, 1] = sims[index]
  out = sims >= certain
  for index in np.flatnonzero((sims >= threshold) & ~out):
    for image in pairs[index]:
      if best[image, 0] == sims[index]:
        runner_up = max(best[image, 1], 0.0)
        if 1 - sims[index] <= ratio * (1 - runner_up):
          out[index] = True
  return out


def find_groups(digests, windows, blurs, frames, threshold=NEAR_THRESHOLD,
                certain=CERTAIN, neighbours=8, seed=0, colours=None,
                workers=1):
  """Groups of duplicate images.

  Args:
    digests: each image's pixel digest (str).
    windows: each image's window (uint8 [PADDED, PADDED]) or None (flat).
    blurs: each window's blur in samples.
    frames: each image's frame (see fingerprint.Fingerprint): a pair must
      be one image cropped by at most MAX_CROP and resized.
    colours: each image's mean chromaticity, if known: a pair's may differ
      by at most COLOUR_TOLERANCE.
    threshold: the window similarity from which two images are near
      duplicates when their match is distinct (`distinct_matches`).
    certain: the window similarity from which they always are.
      duplicates.
    neighbours: candidates each image is verified against.
    seed: the index's k-means seed.
    workers: threads of the verification.

  Returns:
    (groups, pairs_checked): groups are lists of image indices (sorted; the
    groups by their first index), each with "kind": "exact" when its
    images share one digest, else "near", as dicts {"members", "kind",
    "similarity"} (the smallest verified similarity that joined it; 1.0
    for exact groups).
  """
  n = len(digests)
  union = _UnionFind(n)
  first = {}
  for i, d in enumerate(digests):
    if not d:
      continue  # Unread: in no group.
    if d in first:
      union.union(first[d], i)
    else:
      first[d] = i
  # One representative of each distinct image with ink enters the index.
  reps = np.asarray([i for i in first.values() if windows[i] is not None],
                    np.int64)
  weakest = {}
  checked = 0
  if len(reps) > 1:
    stacked = np.stack([windows[i] for i in reps])
    pairs = candidate_pairs(fingerprint_lib.descriptors(stacked),
                            neighbours=neighbours, seed=seed)
    checked = len(pairs)
    if checked:
      framed = np.asarray(frames, np.float64)[reps]
      pairs = pairs[np.atleast_1d(same_geometry(framed[pairs[:, 0]],
                                                framed[pairs[:, 1]]))]
      if colours is not None:
        # The window is gray: two shapes alike in gray but not in colour
        # (a red and a blue circle) are not copies.
        tinted = np.asarray(colours, np.float64)[reps]
        pairs = pairs[np.abs(tinted[pairs[:, 0]] - tinted[pairs[:, 1]]).max(
            axis=1) <= COLOUR_TOLERANCE]
      blurs = np.asarray(blurs)[reps]
      sims = window_similarity(stacked, blurs, pairs, workers=workers)
      # A copy cropped by a few percent shows its content up to 1 / 0.9
      # times larger in its window: zooms are tried where they can matter,
      # on each image's two best matches that are close but not certain.
      zoom = np.flatnonzero(_top_two(pairs, sims, len(reps)) & (
          sims >= ZOOM_FROM) & (sims < certain))
      if len(zoom):
        sims[zoom] = np.maximum(sims[zoom], window_similarity(
            stacked, blurs, pairs[zoom], ZOOMS, workers=workers))
      kept = distinct_matches(pairs, sims, len(reps), threshold, certain)
      for (a, b), s in zip(pairs[kept], sims[kept]):
        union.union(int(reps[a]), int(reps[b]))
        weakest[(int(reps[a]), int(reps[b]))] = float(s)
  members = {}
  for i in range(n):
    members.setdefault(union.find(i), []).append(i)
  lowest = {}
  for (a, _), s in weakest.items():
    root = union.find(a)
    lowest[root] = min(lowest.get(root, 1.0), s)
  groups = []
  for root, group in sorted(members.items()):
    if len(group) < 2:
      continue
    kinds = {digests[i] for i in group}
    groups.append({"members": group,
                   "kind": "exact" if len(kinds) == 1 else "near",
                   "similarity": lowest.get(root, 1.0)})
  return groups, checked
