"""Jinja prompt templates for ASD generation, shipped as package data (one folder per task)."""
