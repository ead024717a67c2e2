"""The commands: the CLI and everything it runs (jobs, preflight, sample, eval, report,
bench, reference scripts, completion, downloads, loggers)."""
