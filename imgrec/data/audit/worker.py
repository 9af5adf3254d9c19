"""A fingerprinting worker: `python -m imgrec.data.audit.worker`.

Reads pickled jobs (paths, max_image_pixels) from its stdin until it
closes, and answers each with the pickled list of their fingerprints (or
None) on its stdout (`store._in_processes` starts it; the pipes are
between imgrec's own processes).
"""

import pickle
import sys

from imgrec.data.audit import store


def main():
  stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
  while True:
    try:
      paths, max_image_pixels = pickle.load(stdin)
    except EOFError:
      return
    pickle.dump(store.chunk_prints(paths, max_image_pixels), stdout)
    stdout.flush()


if __name__ == "__main__":
  main()
