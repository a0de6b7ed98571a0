"""The model holder: the scorer currently serving, swapped atomically when the artifact changes.

Readers take ``holder.scorer`` once per request and use that object to the end, so a swap never
changes the model under a request in flight; assigning an attribute is atomic in CPython, so no
lock is needed on the read path. A background thread polls the artifact's ``artifact.json``
(inode, size, mtime: the writer renames a new file into place, so the inode changes on every
publish) and loads a changed artifact fully before swapping it in. A broken or half-written
artifact is logged and skipped; the old model keeps serving.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from fraudfl.errors import FraudflError
from fraudfl.scoring.artifact import load_artifact, metadata_path
from fraudfl.scoring.records import DEFAULT_ID_FIELD
from fraudfl.scoring.scorer import Scorer

log = logging.getLogger(__name__)

FileStamp = tuple[int, int, int]
SwapListener = Callable[[Scorer, bool], None]


def _stamp(path: Path) -> FileStamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class ModelHolder:
    """Holds the serving :class:`Scorer` for an artifact path and reloads it when it changes."""

    def __init__(
        self,
        path: Path,
        *,
        id_field: str = DEFAULT_ID_FIELD,
        on_load: SwapListener | None = None,
    ) -> None:
        self.path = path
        self.id_field = id_field
        self._meta = metadata_path(path)
        self._on_load = on_load
        self._lock = threading.Lock()  # serialises reloads, never taken by readers
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failed_reloads = 0
        stamp = _stamp(self._meta)
        self.scorer = Scorer(load_artifact(path), id_field)
        self._stamp = stamp
        if on_load is not None:
            on_load(self.scorer, False)
        log.info("serving model v%d (round %d) from %s", self.scorer.version,
                 self.scorer.artifact.round, path)

    def reload_if_changed(self) -> bool:
        """Swap in the artifact if its file changed since the last load; True if swapped."""
        with self._lock:
            stamp = _stamp(self._meta)
            if stamp is None or stamp == self._stamp:
                return False
            try:
                scorer = Scorer(load_artifact(self.path), self.id_field)
            except FraudflError as exc:
                # Also the case when a writer not using save_artifact is mid-way: retry on the
                # next change, keep serving the old model meanwhile.
                self.failed_reloads += 1
                self._stamp = stamp
                log.warning("model artifact changed but cannot be loaded, keeping v%d: %s",
                            self.scorer.version, exc)
                return False
            self._stamp = stamp
            old = self.scorer.version
            self.scorer = scorer
        log.info("hot-swapped model v%d -> v%d (round %d)", old, scorer.version,
                 scorer.artifact.round)
        if self._on_load is not None:
            self._on_load(scorer, True)
        return True

    def start_watching(self, interval_seconds: float = 1.0) -> None:
        """Poll the artifact for changes every ``interval_seconds`` in a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._watch, args=(interval_seconds,), name="model-watcher", daemon=True
        )
        self._thread.start()

    def stop_watching(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.reload_if_changed()
            except Exception:
                # The watcher must outlive any surprise; the old model keeps serving.
                log.exception("model watcher: reload failed")
