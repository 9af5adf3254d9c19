"""The data audit's model-free part: duplicates and leakage.

Modules, from one image up:

* `fingerprint`: an image's pixel digest and its window in a frame of its
  own (what resizing, cropping and brightness leave in place).
* `store`: fingerprints of many files, in parallel, cached.
* `duplicates`: exact and near duplicate groups without comparing all pairs
  (an inverted-file index, then a verification of each candidate).
* `report`: the groups named by file, class and split; leakage and
  conflicting labels.
* `search`: all of it for a data set (`find_duplicates`).
"""
