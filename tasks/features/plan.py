"""Which clips each feature family still needs, for any family the registry (``families/``) holds.

A family's clip is fresh when its store holds it complete with the family's current fingerprint (model
files + settings), or when it failed with that fingerprint (recorded in ``<family>.failures.json``).
The flows only ask this module what to compute, through the run's :class:`Workspace`; the fingerprints
themselves are the families'.
"""

from __future__ import annotations

import logging
from typing import Any

from emotalker.configs.schema import PipelineConfig
from emotalker.storage.failures import load_failures
from emotalker.storage.manifest import Manifest
from emotalker.storage.workspace import Workspace
from emotalker.storage.zarr_store import StoreRoot
from emotalker.tasks.features.spec import FeatureFamily

log = logging.getLogger(__name__)


def prepared_clips(ws: Workspace) -> list[dict[str, Any]]:
    """The local manifest's prepared clips by clip_id (the prepare flow wrote them on this machine); an
    error naming the manifest when there are none."""
    path = ws.paths.resolve("manifest")
    rows = Manifest(path).select(status="prepared")
    if not rows:
        raise FileNotFoundError(f"no prepared clips in {path}: run the prepare flow first")
    return sorted(rows, key=lambda r: r["clip_id"])


def store_root(cfg: PipelineConfig) -> StoreRoot:
    """Where the stores, k-means models and failure records live (with the configured storage options):
    for a family's own hooks (``prepare``, ``prepared``, ``finish``), which are handed the config only;
    the flows and this module's checks use their :class:`Workspace`'s ``stores``."""
    return StoreRoot.from_paths(cfg.paths)


def pending(
    ws: Workspace, family: str, clips: list[dict[str, Any]], fp: str, verify: bool = False
) -> list[dict[str, Any]]:
    """Clips whose family is missing or stale; clips that failed with the same fingerprint stay skipped.

    Each comes back with ``in_store``: False when the store holds no object of it (one listing tells),
    so its writer skips clearing an earlier version (``write_clip(replace=False)``) and this check skips
    reading its metadata. With ``verify`` every fresh clip is read back whole and checked against its
    arrays' checksums (``FeatureStore.verify_clip``): a corrupt one is stale too. Without it a no-op rerun
    reads no array.
    """
    store = ws.store(family)
    failed = load_failures(ws.stores, family)
    stored = set(store.clip_ids(complete_only=False))
    out = []
    for c in clips:
        cid = c["clip_id"]
        if failed.get(cid, {}).get("fingerprint") == fp:
            continue
        if cid not in stored:
            out.append(dict(c, in_store=False))
        elif not store.has_clip(cid, fp):
            out.append(dict(c, in_store=True))
        elif verify and (bad := store.verify_clip(cid)):
            log.warning("%s store: clip %s has corrupt arrays %s: recomputing it", family, cid, bad)
            out.append(dict(c, in_store=True))
    return out


def todo(
    cfg: PipelineConfig,
    family: FeatureFamily,
    clips: list[dict[str, Any]],
    verify: bool = False,
    *,
    ws: Workspace,
) -> tuple[str, list[dict[str, Any]]]:
    """The family's fingerprint and the clips missing or stale in any of its stores (one run writes them
    all), less those whose inputs (``family.needs``) are not fresh yet. A clip is marked ``in_store``
    False only when none of the stores holds anything of it (a store that holds it fresh does).
    ``verify``: corrupt clips count as stale (see :func:`pending`)."""
    fp = family.fingerprint(cfg)
    stale = {
        name: {c["clip_id"]: c["in_store"] for c in pending(ws, name, clips, fp, verify)}
        for name in family.store_names
    }
    ids = {cid for per_store in stale.values() for cid in per_store}
    for need in family.needs:
        nfp, stores = need.fingerprint(cfg), [ws.store(s) for s in need.store_names]
        ids = {i for i in ids if all(s.has_clip(i, nfp) for s in stores)}
    return fp, [
        dict(c, in_store=any(per_store.get(c["clip_id"], True) for per_store in stale.values()))
        for c in clips
        if c["clip_id"] in ids
    ]


def up_to_date(
    cfg: PipelineConfig,
    family: FeatureFamily,
    clips: list[dict[str, Any]],
    verify: bool = False,
    *,
    ws: Workspace,
) -> bool:
    """True when running the family would compute nothing (its ``prepare`` output included)."""
    if family.prepared is not None and not family.prepared(cfg):
        return False
    return not todo(cfg, family, clips, verify, ws=ws)[1]
