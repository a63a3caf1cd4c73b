"""Built-in MEAD-shaped demo data: espeak-ng speech, a cartoon face rendered from ground-truth motion.

Its motion sidecars are read back through ``tasks/features/ground_truth.py``.
"""

from emotalker.tasks.demo.synthetic.mead import generate_mead

__all__ = ["generate_mead"]
