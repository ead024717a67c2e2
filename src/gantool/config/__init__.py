"""Typed config schemas, the dataset schemas as plain data, the metrics table, and the
composition of `configs/` through Hydra with its type and range checks. No torch, no files."""
