"""The bottom layer: errors, atomic file writes and JSON lines, the console, signals.

Imports no other gantool module."""
