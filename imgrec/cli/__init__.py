"""Command-line entry points: thin absl apps over the imgrec library."""
