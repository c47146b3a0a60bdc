"""Micro-CoIN: a generated continual-learning benchmark over procedurally drawn pictures (`generate.py`)."""
