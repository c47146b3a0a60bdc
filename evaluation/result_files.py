"""The names of the files evaluation writes into a run folder: one place, read by every writer and reader.

Why here: evaluation owns these files (training's stage evaluation writes them, `sefe report` and Micro-CoIN
read them), so neither side has to import the other to agree on a name.
"""

from __future__ import annotations

ACCURACY_FILE = "accuracy.json"  # <run>/accuracy.json: the accuracy matrix (percent), an AccuracyMatrix
FORMAT_FILE = "format_errors.json"  # <run>/format_errors.json: format-error matrix (percent)
KNOWLEDGE_FILE = "knowledge.json"  # <run>/knowledge.json: knowledge-probe matrix (percent)
OUT_OF_POOL_FILE = "out_of_pool.json"  # <run>/out_of_pool.json: answers in none of the task's pool (percent)
FROM_POOL_FILE = "from_pool.json"  # <run>/from_pool.json: per cell, percent of answers from task j's pool
