"""Renders an evaluation report as one self-contained HTML page.

The page needs no other file and no network: pictures are embedded as
`data:` URIs, the style sheet is inline, there is no script, and a
Content-Security-Policy forbids loading anything else. Every string taken
from the report (class names are folder names anyone can choose, paths,
data folders) is HTML-escaped.
"""

import base64
import html

_MAX_CLASS_ROWS = 100
_MAX_LISTED_NAMES = 10
# (key, header, kind) of the tables of lists in a report.
_CONFUSION_COLUMNS = [("true", "true class", "text"),
                      ("predicted", "predicted as", "text"),
                      ("count", "count", "count"),
                      ("fraction", "fraction of true class", "number")]
_MISTAKE_COLUMNS = [("path", "image", "text"), ("true", "true class", "text"),
                    ("predicted", "predicted", "text"),
                    ("probability", "probability", "number")]

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif;
       color: #1f2328; margin: 0 auto; max-width: 1200px; padding: 1em 2em; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-top: 1.5em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #d0d7de; padding: .25em .6em; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; }
tbody tr:nth-child(even) { background: #fafbfc; }
.num { text-align: right; font-variant-numeric: tabular-nums;
       white-space: nowrap; }
.text { max-width: 32em; overflow-wrap: anywhere; }
.note { color: #59636e; font-size: .9em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
figcaption { color: #59636e; font-size: .9em; margin-top: .3em; }
"""

# Defence in depth behind the escaping: even markup that slipped through
# could neither run a script nor load anything.
_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        "base-uri 'none'; form-action 'none'")


def _escape(value):
  return html.escape(str(value), quote=True)


def _format(value, kind):
  """The text of a table cell: numbers formatted, missing values "n/a"."""
  if value is None:
    return "n/a"
  if kind in ("text", "formatted"):
    return str(value)
  try:
    number = float(value)
  except (TypeError, ValueError):
    return str(value)
  if kind == "count":
    return f"{int(number):,}"
  if kind == "signed":
    return f"{number:+.4f}"
  return f"{number:.4f}"


def _table(columns, rows):
  """An HTML table; every cell is formatted and escaped here.

  Args:
    columns: (header, kind) pairs; kind is "text", "number" (4 decimals),
      "signed" (4 decimals with a sign), "count" (an integer) or
      "formatted" (a number already formatted); all but text align right.
    rows: lists of raw values, one per column.

  Returns:
    The table's HTML.
  """
  def css(kind):
    return "text" if kind == "text" else "num"
  head = "".join(f'<th class="{css(kind)}">{_escape(header)}</th>'
                 for header, kind in columns)
  body = []
  for row in rows:
    cells = "".join(
        f'<td class="{css(kind)}">{_escape(_format(value, kind))}</td>'
        for (_, kind), value in zip(columns, row))
    body.append(f"<tr>{cells}</tr>")
  return (f"<table><thead><tr>{head}</tr></thead>"
          f"<tbody>{''.join(body)}</tbody></table>")


def _note(text):
  return f'<p class="note">{_escape(text)}</p>'


def _summary(report):
  """The headline numbers of one report."""
  rows = [("Examples", report.get("num_examples"), "count"),
          ("Accuracy", report.get("accuracy"), "number")]
  top_k = report.get("top_k")
  if isinstance(top_k, dict) and top_k:
    for k in sorted(top_k, key=lambda k: int(k) if str(k).isdigit() else 0):
      rows.append((f"Top-{k} accuracy", top_k[k], "number"))
  elif "top_k_accuracy" in report:
    rows.append((f"Top-{report.get('k')} accuracy",
                 report.get("top_k_accuracy"), "number"))
  macro = report.get("macro_avg") or {}
  weighted = report.get("weighted_avg") or {}
  roc_auc = report.get("roc_auc") or {}
  rows += [
      ("Macro F1", macro.get("f1", report.get("macro_f1")), "number"),
      ("Weighted F1", weighted.get("f1"), "number"),
      ("ROC AUC (macro)", roc_auc.get("macro"), "number"),
      ("ROC AUC (weighted)", roc_auc.get("weighted"), "number"),
      ("Expected calibration error (ECE)", report.get("ece"), "number"),
      ("Temperature", report.get("temperature"), "number"),
      ("ECE after temperature", report.get("ece_after_temperature"),
       "number"),
  ]
  table = _table([("metric", "text"), ("value", "formatted")],
                 [(label, _format(value, kind)) for label, value, kind in rows])
  return [f"<h3>Summary</h3>{table}"]


def _records(heading, records, columns):
  """A titled table of dicts, one row each; nothing when there are none.

  Args:
    heading: the table's heading.
    records: dicts (or None).
    columns: (key, header, kind) triples; kind as in `_table`.

  Returns:
    A list of HTML parts.
  """
  if not records:
    return []
  rows = [[record.get(key) for key, _, _ in columns] for record in records]
  table = _table([(header, kind) for _, header, kind in columns], rows)
  return [f"<h3>{_escape(heading)}</h3>{table}"]


def _is_number(value):
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _figures(record):
  """(key, header) of the two figures of a TTA or ensemble record: mAP and
  micro F1 for label sets, else accuracy and macro F1."""
  if "map" in record:
    return ("map", "mAP"), ("micro_f1", "micro F1")
  return ("accuracy", "accuracy"), ("macro_f1", "macro F1")


def _tta(tta):
  (key, header), _ = _figures(tta)
  value, without = tta.get(key), tta.get(f"{key}_without")
  change = (value - without
            if _is_number(value) and _is_number(without) else None)
  return _records("Test-time augmentation", [dict(tta, change=change)],
                  [("mode", "mode", "text"), (key, header, "number"),
                   (f"{key}_without", f"{header} without", "number"),
                   ("change", "change", "signed")])


def _ensemble(ensemble):
  members = list(ensemble.get("members") or [])
  weights = [m.get("weight") for m in members]
  total = (sum(weights) if weights and all(map(_is_number, weights))
           else None)
  (first, first_header), (second, second_header) = _figures(ensemble)
  combined = {"model_dir": "ensemble", first: ensemble.get(first),
              second: ensemble.get(second), "weight": total}
  return _records("Ensemble", members + [combined],
                  [("model_dir", "model", "text"),
                   (first, first_header, "number"),
                   (second, second_header, "number"),
                   ("weight", "weight", "number")])


def _label_set_summary(report):
  """The headline figures of a report of label sets."""
  ml = report["multilabel"]
  cardinality = ml.get("cardinality") or {}
  rows = [("Examples", report.get("num_examples"), "count"),
          ("Mean average precision (mAP)", ml.get("map"), "number"),
          ("Micro F1", ml.get("micro_f1"), "number"),
          ("Macro F1", ml.get("macro_f1"), "number"),
          ("Subset accuracy (exact label set)", ml.get("subset_accuracy"),
           "number"),
          ("Hamming loss", ml.get("hamming_loss"), "number"),
          ("Labels an image, true", cardinality.get("true"), "number"),
          ("Labels an image, predicted", cardinality.get("predicted"),
           "number"),
          ("Thresholds", report.get("threshold_source"), "text")]
  return ["<h3>Summary</h3>" + _table(
      [("metric", "text"), ("value", "formatted")],
      [(label, _format(value, kind)) for label, value, kind in rows])]


def _worst_classes(report, per_class, badness, what):
  """(["<h3>Per class</h3>", a note when cut], the classes to list): all of
  them, or the _MAX_CLASS_ROWS worst by `badness(row)` (smallest first;
  ties in label order); ([], []) without classes."""
  names = [n for n in report.get("class_names") or per_class
           if n in per_class]
  if not names:
    return [], []
  parts = ["<h3>Per class</h3>"]
  if len(names) > _MAX_CLASS_ROWS:
    position = {name: i for i, name in enumerate(names)}
    names = sorted(names, key=lambda n: (*badness(per_class[n]), position[n])
                   )[:_MAX_CLASS_ROWS]
    parts.append(_note(f"The {_MAX_CLASS_ROWS} classes {what} of "
                       f"{len(position)}, worst first."))
  return parts, names


def _label_set_classes(report):
  """Per-class AP, threshold, P/R/F1, support and ECE; the classes of lowest
  AP only when there are many (a class without examples has no AP)."""
  per_class = report["multilabel"].get("per_class") or {}
  parts, names = _worst_classes(
      report, per_class,
      lambda row: (row.get("ap") is not None, row.get("ap") or 0.0),
      "of lowest AP")
  if not names:
    return []
  keys = ("ap", "threshold", "precision", "recall", "f1", "support", "ece")
  parts.append(_table(
      [("class", "text"), ("AP", "number"), ("threshold", "number"),
       ("precision", "number"), ("recall", "number"), ("F1", "number"),
       ("support", "count"), ("ECE", "number")],
      [(name, *(per_class[name].get(k) for k in keys)) for name in names]))
  return parts


def _pictures(pictures):
  parts = []
  for caption, png in (pictures or {}).items():
    if png is None:
      continue
    data = base64.b64encode(bytes(png)).decode("ascii")
    parts.append(f'<figure><img src="data:image/png;base64,{data}" '
                 f'alt="{_escape(caption)}">'
                 f"<figcaption>{_escape(caption)}</figcaption></figure>")
  return parts


def _per_class(report):
  """Per-class metrics, the worst classes only when there are many."""
  per_class = report.get("per_class") or {}
  parts, names = _worst_classes(
      report, per_class,
      lambda row: (row.get("f1") or 0.0, -(row.get("support") or 0)),
      "with the lowest F1")
  if not names:
    return []
  rows = [(name, per_class[name].get("precision"),
           per_class[name].get("recall"), per_class[name].get("f1"),
           per_class[name].get("support"), per_class[name].get("roc_auc"))
          for name in names]
  parts.append(_table([("class", "text"), ("precision", "number"),
                       ("recall", "number"), ("F1", "number"),
                       ("support", "count"), ("ROC AUC", "number")], rows))
  return parts


def _listed(names):
  """A few names joined by commas, with how many more there are."""
  names = [str(n) for n in names]
  if not names:
    return "none"
  text = ", ".join(names[:_MAX_LISTED_NAMES])
  if len(names) > _MAX_LISTED_NAMES:
    text += f" and {len(names) - _MAX_LISTED_NAMES} more"
  return text


def _comparison(rows):
  label_sets = bool(rows) and "map" in rows[0]
  figures = ((("mAP", "map"), ("micro F1", "micro_f1"),
              ("macro F1", "macro_f1")) if label_sets else
             (("accuracy", "accuracy"), ("macro F1", "macro_f1"),
              ("ECE", "ece")))
  table_rows = []
  for row in rows:
    unknown = row.get("unknown_classes") or {}
    table_rows.append((
        row.get("data_dir"), row.get("num_examples"),
        *(row.get(key) for _, key in figures),
        _listed(row.get("missing_classes") or []),
        _listed(f"{name} ({count})" for name, count in unknown.items())))
  table = _table([("data", "text"), ("examples", "count"),
                  *((title, "number") for title, _ in figures),
                  ("missing classes", "text"),
                  (("unknown labels (images)" if label_sets else
                    "unknown classes (examples)"), "text")], table_rows)
  return [f'<h2 id="comparison">Comparison of the data sets</h2>{table}']


def _section(report, pictures, heading, anchor):
  """Everything about one evaluated data set."""
  parts = [f'<section id="{anchor}"><h2>{_escape(heading)}</h2>']
  data = report.get("data") or {}
  if data:
    parts.append(_note(f"data: {data.get('data_dir', 'n/a')} \u00b7 "
                       f"split: {data.get('split', 'n/a')}"))
  label_sets = isinstance(report.get("multilabel"), dict)
  if "num_examples" in report:
    parts += _label_set_summary(report) if label_sets else _summary(report)
  if isinstance(report.get("tta"), dict):
    parts += _tta(report["tta"])
  if isinstance(report.get("ensemble"), dict):
    parts += _ensemble(report["ensemble"])
  parts += _pictures(pictures)
  parts += _label_set_classes(report) if label_sets else _per_class(report)
  parts += _records("Top confusions", report.get("top_confusions"),
                    _CONFUSION_COLUMNS)
  parts += _records("Most confident mistakes", report.get("mistakes"),
                    _MISTAKE_COLUMNS)
  parts.append("</section>")
  return parts


def _dataset_heading(section, index):
  data = section.get("data") or {}
  where = data.get("data_dir") or f"data set {index + 1}"
  return f"{where} ({data['split']})" if data.get("split") else where


def render_report(report, pictures=None, title="imgrec evaluation",
                  pictures_by_section=None):
  """The HTML page of an evaluation report.

  Args:
    report: an evaluation report (summary, per-class, confusions, optional
      `tta` and `ensemble`). When it has `datasets` (a list of reports of
      the same shape, each with `data`), each gets a section of its own,
      after the table of `comparison` rows when there is one.
    pictures: ordered dict {caption: PNG bytes} of the pictures of `report`
      itself, shown in that order (None values are left out).
    title: the page title.
    pictures_by_section: the pictures of `report["datasets"]`: a list with
      one {caption: PNG bytes} dict (or None) per data set, in the same
      order.

  Returns:
    The page as a string: one self-contained HTML document.
  """
  datasets = report.get("datasets") or []
  pictures_by_section = list(pictures_by_section or [])
  pictures_by_section += [None] * (len(datasets) - len(pictures_by_section))
  body = [f"<h1>{_escape(title)}</h1>"]
  if "num_examples" in report or pictures:
    body += _section(report, pictures, "Results", "results")
  if report.get("comparison"):
    body += _comparison(report["comparison"])
  for i, (section, section_pictures) in enumerate(
      zip(datasets, pictures_by_section)):
    body += _section(section, section_pictures, _dataset_heading(section, i),
                     f"data-{i + 1}")
  return document(title, body)


def document(title, body, style=_STYLE):
  """One self-contained HTML page: `body` (a list of HTML fragments, each
  escaped by its maker) under `title`, with `style` and the page's
  Content-Security-Policy."""
  return ("<!DOCTYPE html>\n<html lang=\"en\"><head>"
          '<meta charset="utf-8">'
          f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
          '<meta name="viewport" content="width=device-width, '
          'initial-scale=1">'
          f"<title>{_escape(title)}</title><style>{style}</style></head>\n"
          "<body>\n" + "\n".join(body) + "\n</body></html>\n")


# What other pages built like this one use.
STYLE = _STYLE
MAX_CLASS_ROWS = _MAX_CLASS_ROWS
escape = _escape
table = _table
note = _note
