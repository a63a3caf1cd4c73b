"""Writing the demo's Hugging Face stand-ins prints no resize reports or shard bars, and leaves the
user's transformers settings as they were."""

from __future__ import annotations

import logging

from transformers.utils import logging as hf_logging

from emotalker.tasks.demo.standins.quiet import quiet_transformers


def test_quiet_inside_and_restored_after() -> None:
    hf_logging.set_verbosity_warning()
    hf_logging.enable_progress_bar()
    with quiet_transformers():
        assert hf_logging.get_verbosity() == logging.ERROR and not hf_logging.is_progress_bar_enabled()
    assert hf_logging.get_verbosity() == logging.WARNING and hf_logging.is_progress_bar_enabled()
