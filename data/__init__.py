"""Bundled sample data (`coin-mini/`) and the script that regenerates it."""
