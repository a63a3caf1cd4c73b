"""Where a HuBERT checkpoint lives: a local directory or the offline Hugging Face cache.

Kept apart from :mod:`emotalker.tasks.features.hubert` (torch, transformers) so the feature flows can
check their assets before deciding there is nothing to compute without importing either.
"""

from __future__ import annotations

from pathlib import Path


class HubertModelNotFound(FileNotFoundError):
    """The requested HuBERT checkpoint is neither a local directory nor in the local HF cache."""


def missing_message(name: str) -> str:
    """What to do when ``name`` is neither a local model directory nor in the local HF cache."""
    return (
        f"HuBERT checkpoint {name!r} not found: it is not a local directory and not in the local "
        f"Hugging Face cache (HF_HUB_CACHE / HF_HOME). On a machine with internet run "
        f"`huggingface-cli download {name}` (or `hf download {name}`) and copy the cache over, or set the "
        f"model path in the config (audio.emotion_model / audio.content_model) to a directory holding "
        f"config.json and the weights."
    )


def resolve_model_dir(name_or_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Local directory for a path or an HF cache id, without any network access."""
    s = str(name_or_path)
    p = Path(s).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise HubertModelNotFound(f"{p} is a directory but has no config.json; {missing_message(s)}")
        return p
    if p.exists():
        raise HubertModelNotFound(f"{p} is a file, expected a model directory or an HF id")
    looks_like_id = s.count("/") == 1 and not s.startswith((".", "/", "~"))
    if not looks_like_id:
        raise HubertModelNotFound(missing_message(s))
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snap = snapshot_download(
            s, cache_dir=None if cache_dir is None else str(cache_dir), local_files_only=True
        )
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError) as exc:
        raise HubertModelNotFound(missing_message(s)) from exc
    snap_path = Path(snap)
    if not (snap_path / "config.json").is_file():
        raise HubertModelNotFound(f"cached snapshot {snap_path} has no config.json; {missing_message(s)}")
    return snap_path
