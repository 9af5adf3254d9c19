"""audit.html: the data audit as one self-contained page, images side by side.

Built like `html.render_report`'s page: no script, no network, pictures as
`data:` URIs, a Content-Security-Policy that loads nothing, and every
string from the data (paths, class names anyone can choose) escaped.
"""

import base64
import io

import numpy as np

from imgrec.data import decode
from imgrec.evaluation import html as html_lib
from imgrec.errors import ImgrecError

THUMBNAIL = 96
# What the page shows at the most (audit.json lists everything).
MAX_GROUPS = 100
MAX_IMAGES_A_GROUP = 6
MAX_ROWS = 100

_STYLE = html_lib.STYLE + """
.images { display: flex; flex-wrap: wrap; gap: .6em; margin: .3em 0 1.2em; }
.images figure { margin: 0; width: 8.5em; }
.images img { width: 96px; height: 96px; object-fit: contain;
              background: #f6f8fa; }
.images figcaption { overflow-wrap: anywhere; }
.flag { color: #a40e26; font-weight: 600; }
"""


def _thumbnail(path, max_image_pixels):
  """A PNG data URI of the image at most THUMBNAIL pixels a side, or None
  when it cannot be read now."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    rgb = decode.read_file(path, channels=3, max_pixels=max_image_pixels,
                           target_size=(THUMBNAIL, THUMBNAIL))
  except (ImgrecError, OSError, ValueError):
    return None
  image = Image.fromarray(np.asarray(rgb))
  image.thumbnail((THUMBNAIL, THUMBNAIL))
  buffer = io.BytesIO()
  image.save(buffer, "PNG")
  return "data:image/png;base64," + base64.b64encode(
      buffer.getvalue()).decode("ascii")


def _figure(path, caption, read_path, max_image_pixels):
  uri = _thumbnail(read_path, max_image_pixels)
  picture = (f'<img src="{uri}" alt="{html_lib.escape(path)}">' if uri else
             '<p class="note">(cannot be read now)</p>')
  return (f"<figure>{picture}<figcaption>{html_lib.escape(caption)}"
          "</figcaption></figure>")


def _duplicates(audit, read, max_image_pixels):
  summary = audit["summary"].get("duplicates")
  if summary is None:
    return []
  out = ["<h2 id=\"duplicates\">Duplicates</h2>", html_lib.table(
      [("", "text"), ("", "count")],
      [["images", summary["images"]], ["groups", summary["groups"]],
       ["exact groups", summary["exact_groups"]],
       ["near groups", summary["near_groups"]],
       ["groups across splits (leakage)", summary["leakage_groups"]],
       ["groups across classes (conflicting labels)",
        summary["conflict_groups"]],
       ["images that repeat another", summary["redundant_images"]]])]
  groups = audit["duplicates"]
  if len(groups) > MAX_GROUPS:
    out.append(html_lib.note(f"The first {MAX_GROUPS} of {len(groups)} "
                             "groups (leakage, then conflicting labels, "
                             "first); audit.json lists them all."))
  for i, group in enumerate(groups[:MAX_GROUPS]):
    flags = [name for name, on in (("leakage", group["leakage"]),
                                   ("conflicting labels", group["conflict"]))
             if on]
    head = (f"{i + 1}. {group['kind']} duplicates, {len(group['paths'])} "
            f"images, similarity {group['similarity']:.4f}")
    out.append(f"<h3>{html_lib.escape(head)}"
               + (f' <span class="flag">{html_lib.escape(", ".join(flags))}'
                  "</span>" if flags else "") + "</h3>")
    figures = [
        _figure(path, f"{path} ({cls}, {split})", read.get(path, path),
                max_image_pixels)
        for path, cls, split in list(zip(group["paths"], group["classes"],
                                          group["splits"]))[
                                              :MAX_IMAGES_A_GROUP]]
    out.append('<div class="images">' + "".join(figures) + "</div>")
  return out


def _gallery(items, caption, read, max_image_pixels):
  """Thumbnails of the first MAX_ROWS `items`, each captioned by
  `caption(item)`."""
  figures = [_figure(item["path"], caption(item),
                     read.get(item["path"], item["path"]), max_image_pixels)
             for item in items[:MAX_ROWS]]
  return '<div class="images">' + "".join(figures) + "</div>"


def _label_issues(audit, read, max_image_pixels):
  issues = audit.get("label_issues")
  if issues is None:
    return []
  return ["<h2 id=\"labels\">Label issues</h2>",
          html_lib.note(f"{len(issues)} images whose given label the "
                        "out-of-sample probabilities doubt, most likely "
                        "wrong first."),
          _gallery(issues, _issue_caption, read, max_image_pixels)]


def _names(value):
  """A class name, or a label set's names joined (none: "no label")."""
  if isinstance(value, list):
    return " + ".join(value) or "no label"
  return value


def _issue_caption(issue):
  caption = (f"{issue['path']}: given {_names(issue['given'])}, suggested "
             f"{_names(issue['suggested'])}")
  if issue.get("doubted"):
    caption += f"; in doubt: {_names(issue['doubted'])}"
  return caption + f" (score {issue['score']:.3f})"


def _outliers(audit, read, max_image_pixels):
  outliers = audit.get("outliers")
  if outliers is None:
    return []
  return ["<h2 id=\"outliers\">Outliers</h2>",
          html_lib.note(f"{len(outliers)} images far from every class, "
                        "farthest first."),
          _gallery(outliers, lambda i: f"{i['path']} ({i['given']}; score "
                   f"{i['score']:.3f})", read, max_image_pixels)]


def _classes(audit):
  counts = audit["summary"].get("classes")
  if not counts:
    return []
  rows = [[name, row["images"], row["share"]] for name, row in
          sorted(counts.items(), key=lambda kv: kv[1]["images"])]
  return ["<h2 id=\"classes\">Classes</h2>", html_lib.table(
      [("class", "text"), ("images", "count"), ("share", "number")],
      rows[:html_lib.MAX_CLASS_ROWS])]


def render(audit, read_paths=None, max_image_pixels=None):
  """The page of an audit.json dict.

  Args:
    audit: the audit (see imgrec.training.audit).
    read_paths: {path: the file to read for its thumbnail} (the scan's
      converted copies); a path not in it is read as it is.
    max_image_pixels: the pixel limit for thumbnails.

  Returns:
    The HTML document.
  """
  read = dict(read_paths or {})
  title = f"imgrec data audit: {audit['data']['root']}"
  body = [f"<h1>{html_lib.escape(title)}</h1>"]
  body += _classes(audit)
  body += _duplicates(audit, read, max_image_pixels)
  body += _label_issues(audit, read, max_image_pixels)
  body += _outliers(audit, read, max_image_pixels)
  return html_lib.document(title, body, style=_STYLE)
