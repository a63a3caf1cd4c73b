"""Data stage: MEAD download, safe extraction, 25 fps / 16 kHz preparation (the split lives in storage)."""
