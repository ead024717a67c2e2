"""A run: the GAN, its step (eager or as a CUDA graph), the checkpoint codec and the
checkpointer, the run folder, the loop and the end of a run."""
