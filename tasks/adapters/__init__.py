"""Adapters that reach into third-party internals where no public API exists, one module per library.

Each checks the pinned version's internals it relies on and fails with a message naming the module to
update, instead of silently doing nothing after an upgrade; ``tests/test_adapters.py`` runs
those checks.
"""
