"""lmpc.runtime: models, prompt rendering, typed outputs, scheduling, cache and traces."""
