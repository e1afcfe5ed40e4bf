"""Tuning: PEFT method builders, the training run and its loop, callbacks, checkpoints, sweeps and the run registry."""
