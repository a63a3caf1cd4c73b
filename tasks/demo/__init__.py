"""The demo world: synthetic MEAD-shaped data and real-format stand-in weights (not a pipeline stage)."""
