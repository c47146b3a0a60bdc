"""The names of the files evaluation writes into a run folder: one place, read by every writer and reader.

Why here: evaluation owns these files (training's stage evaluation writes them, `sefe report` and Micro-CoIN
read them), so neither side has to import the other to agree on a name.
"""

from __future__ import annotations

ACCURACY_FILE = "accuracy.json"  # <run>/accuracy.json: the accuracy matrix (percent), an AccuracyMatrix
FORMAT_FILE = "format_errors.json"  # <run>/format_errors.json: format-error matrix (percent)
KNOWLEDGE_FILE = "knowledge.json"  # <run>/knowledge.json: knowledge-probe matrix (percent)
