"""Fixed-length training windows read lazily from feature stores.

Training samples are short windows (e.g. 96 frames) of per-frame features from several stores (face
coefficients, HuBERT features, tokens, mel); reading only the window's chunks keeps memory flat no matter
how many clips there are, and the dataset pickles cheaply into DataLoader workers.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from emotalker.storage.zarr_store import FeatureStore


class WindowDataset(Dataset):
    """Windows ``[s, s + window)`` (step ``hop``) over clips, aligned on the 25 fps video frame axis.

    Each item is ``{name: Tensor(window, ...), "clip_id": str, "start": int}`` plus ``"label": int`` when
    ``labels`` is given. A source given as ``(store, key, rate)`` holds ``rate`` frames per video frame
    (HuBERT features and tokens at their native 50 Hz: rate 2); its items are the ``rate * window`` frames
    ``[rate * s, rate * (s + window))``, the clip's last frame repeated where the store ends early
    (floor((N - 400) / 320) + 1 HuBERT frames fall one short of 2 per video frame).
    ``transforms[name]`` is applied to the numpy slice before conversion to a tensor.
    Clips shorter than ``window`` are skipped and counted in ``.skipped``. Clip completeness and lengths
    are checked once here; items then slice per-worker cached zarr handles (only the overlapping chunks are
    read) or, for clips that fit ``cache_bytes``, a per-worker LRU of decoded clips, so the stores must
    not be rewritten while the dataset is in use.
    """

    HANDLE_CACHE = 1024  # open zarr array handles kept per process
    CACHE_BYTES = 512 * 2**20  # decoded whole-clip arrays kept per process (LRU), see ``cache_bytes``

    def __init__(
        self,
        sources: dict[str, tuple[FeatureStore, str] | tuple[FeatureStore, str, int]],
        clip_ids: list[str],
        window: int,
        *,
        hop: int | None = None,
        labels: dict[str, int] | None = None,
        transforms: dict[str, Callable] | None = None,
        cache_bytes: int | None = None,
    ):
        if not sources:
            raise ValueError("WindowDataset needs at least one source")
        reserved = {"clip_id", "label", "start"} & set(sources)
        if reserved:
            raise ValueError(f"source names {sorted(reserved)} are reserved for item metadata")
        if int(window) < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = int(window)
        self.hop = max(1, self.window // 2) if hop is None else int(hop)
        if self.hop < 1:
            raise ValueError(f"hop must be >= 1, got {hop}")
        self.sources: dict[str, tuple[FeatureStore, str]] = {}
        self.rates: dict[str, int] = {}
        for name, src in sources.items():
            rate = int(src[2]) if len(src) == 3 else 1  # type: ignore[misc]
            if rate < 1:
                raise ValueError(f"source {name!r}: rate must be >= 1 frame per video frame, got {rate}")
            self.sources[name] = (src[0], src[1])
            self.rates[name] = rate
        self.transforms = dict(transforms or {})
        unknown = sorted(set(self.transforms) - set(self.sources))
        if unknown:
            raise ValueError(f"transforms for unknown source(s) {unknown}; sources: {sorted(self.sources)}")
        self.labels = None if labels is None else dict(labels)
        # Windows overlap and each epoch revisits every clip: decoding a clip's chunks once and slicing
        # the decoded array afterwards keeps small datasets (the demo) from being loader-bound.
        self.cache_bytes = self.CACHE_BYTES if cache_bytes is None else int(cache_bytes)
        self._decoded: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._decoded_bytes = 0

        self.clip_lengths: dict[str, int] = {}
        self.skipped: int = 0
        self.skipped_ids: list[str] = []
        self._index: list[tuple[str, int]] = []
        self._handles: OrderedDict[tuple[str, str], Any] = OrderedDict()
        warned = False
        for cid in clip_ids:
            if self.labels is not None and cid not in self.labels:
                raise KeyError(f"no label for clip {cid!r}")
            lengths = {}
            for name, (store, key) in self.sources.items():
                try:
                    shape = store.shape(cid, key)  # one metadata read per clip and source (object storage)
                except KeyError:
                    if store.has_clip(cid):
                        raise  # the clip is there, the array is not: that error names both
                    raise KeyError(
                        f"clip {cid!r} is missing or incomplete in {store.display_url} (source {name!r})"
                    ) from None
                if len(shape) == 0:
                    raise ValueError(f"source {name!r}: array {key!r} of clip {cid!r} is scalar")
                lengths[name] = -(-shape[0] // self.rates[name])  # in video frames
            n = min(lengths.values())
            if len(set(lengths.values())) > 1 and not warned:
                warnings.warn(
                    f"WindowDataset: frame counts differ for clip {cid!r} {lengths}; using the minimum {n} "
                    "(further mismatches are not reported)",
                    stacklevel=2,
                )
                warned = True
            self.clip_lengths[cid] = n
            if n < self.window:
                self.skipped += 1
                self.skipped_ids.append(cid)
                continue
            self._index.extend((cid, s) for s in range(0, n - self.window + 1, self.hop))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()  # zarr handles are reopened in each worker
        state["_decoded"], state["_decoded_bytes"] = OrderedDict(), 0
        return state

    def _handle(self, name: str, clip_id: str) -> Any:
        hk = (name, clip_id)
        h = self._handles.get(hk)
        if h is None:
            store, key = self.sources[name]
            h = store.array(clip_id, key)
            self._handles[hk] = h
            if len(self._handles) > self.HANDLE_CACHE:
                self._handles.popitem(last=False)
        else:
            self._handles.move_to_end(hk)
        return h

    def _rows(self, name: str, clip_id: str, start: int, stop: int) -> np.ndarray:
        """Stored rows ``[start, stop)``: from the decoded-clip cache when the clip fits in it."""
        hk = (name, clip_id)
        full = self._decoded.get(hk)
        if full is not None:
            self._decoded.move_to_end(hk)
            return full[start:stop].copy()  # callers may modify items in place
        h = self._handle(name, clip_id)
        nbytes = int(np.prod(h.shape)) * h.dtype.itemsize
        if nbytes > self.cache_bytes // 2:  # too large to be worth caching: read just the window
            return np.asarray(h[start:stop])
        full = np.asarray(h[...])
        self._decoded[hk] = full
        self._decoded_bytes += nbytes
        while self._decoded_bytes > self.cache_bytes and self._decoded:
            _, old = self._decoded.popitem(last=False)
            self._decoded_bytes -= old.nbytes
        return full[start:stop].copy()

    def _slice(self, name: str, clip_id: str, start: int) -> np.ndarray:
        """The source's rows for video frames ``[start, start + window)`` (``rate`` rows per frame)."""
        r = self.rates[name]
        want = r * self.window
        rows = self._rows(name, clip_id, r * start, r * start + want)
        if len(rows) < want:  # a native-rate store ends a frame early: hold the last frame
            rows = np.concatenate([rows, np.repeat(rows[-1:], want - len(rows), axis=0)])
        return rows

    def frame(self, name: str, clip_id: str, index: int) -> np.ndarray:
        """One stored row of a source (e.g. a randomly sampled reference frame of the clip)."""
        if not 0 <= index < self.clip_lengths[clip_id] * self.rates[name]:
            raise IndexError(f"frame {index} out of range for clip {clip_id!r} (source {name!r})")
        return self._rows(name, clip_id, index, index + 1)[0]

    def __len__(self) -> int:
        return len(self._index)

    def window_at(self, idx: int) -> tuple[str, int]:
        """(clip_id, start frame) of item idx."""
        return self._index[idx]

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if idx < 0:
            idx += len(self._index)
        if not 0 <= idx < len(self._index):
            raise IndexError(f"window index {idx} out of range for {len(self._index)} windows")
        cid, start = self._index[idx]
        item: dict[str, Any] = {}
        for name in self.sources:
            arr = self._slice(name, cid, start)
            tf = self.transforms.get(name)
            if tf is not None:
                arr = tf(arr)
            item[name] = torch.as_tensor(np.ascontiguousarray(arr) if isinstance(arr, np.ndarray) else arr)
        item["clip_id"] = cid
        item["start"] = start
        if self.labels is not None:
            item["label"] = int(self.labels[cid])
        return item
