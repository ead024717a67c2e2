"""Where and how a run executes: the device, data-parallel processes, RNG state, CPU threads."""
