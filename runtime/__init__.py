"""lmpc.runtime."""
