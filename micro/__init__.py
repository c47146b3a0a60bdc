"""Micro-CoIN: build, warm start, run and report the small continual benchmark (`sefe micro`)."""
