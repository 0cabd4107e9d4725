"""lmpc.optimizers."""
