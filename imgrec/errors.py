"""Errors that imgrec reports to users as one clear line."""


class ImgrecError(ValueError):
  """A problem with the user's input: what is wrong, where, and what to do.

  Command-line tools print the message on one line and exit with status 2,
  without a traceback.
  """
