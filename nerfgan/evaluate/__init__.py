"""Measures of a teacher or an engine: today the scene family's ground-truth scores (parity and bench live in runtime/)."""
