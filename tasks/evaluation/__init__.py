"""Evaluation stage: Table 1 metrics (LMD, SSIM, CPBD, SyncNet confidence, EmoAcc)."""
