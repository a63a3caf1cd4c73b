"""Storage-layer tests."""
