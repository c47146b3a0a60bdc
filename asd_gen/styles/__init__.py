"""asd_gen/styles."""
