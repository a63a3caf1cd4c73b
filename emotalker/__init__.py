"""EmoTalker reproduction pipeline: MEAD -> features -> training -> generation, orchestrated by Prefect."""

__version__ = "0.1.0"
