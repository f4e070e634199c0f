"""The watcher: a background thread that analyses new CT studies of the PACS as they arrive."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any

from app.core.errors import AnalysisInProgress, InvalidStudy, NotFound, ServiceError
from app.services.analysis import short_id
from app.services.pacs.service import PacsService

logger = logging.getLogger(__name__)


class StudyWatcher:
    """A background thread that analyses new CT studies of the PACS as they arrive.

    Every ``interval`` seconds it asks QIDO-RS for CT studies dated from ``lookback_days`` ago
    and analyses each one this service has not analysed yet; the worklist then lists them,
    haemorrhage-suspected first when asked. A modality sends a study one image at a time, so a
    study is analysed only once it has stopped growing: when its number of instances is the one
    the previous poll saw. Every worker of every replica runs one: the claims of
    ``analysis_claims`` let only one of them analyse each series.

    With the job queue, the watchers of the queue's workers take turns (``turn``: whether this
    process polls now, a lock in Redis), share what the last poll saw (``sizes``, kept in Redis),
    and queue each new study as a job (``enqueue``: the id of the new job, None when there is
    none) instead of analysing it on their own thread.
    """

    def __init__(
        self,
        pacs: PacsService,
        interval: float,
        lookback_days: int = 1,
        enqueue: Callable[[str], str | None] | None = None,
        turn: Callable[[], bool] | None = None,
        sizes: MutableMapping[str, int | None] | None = None,
    ) -> None:
        self.pacs = pacs
        self.interval = interval
        self.lookback_days = lookback_days
        self.enqueue = enqueue
        self.turn = turn
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: set[str] = set()
        # Instances each waiting study had at the last poll (None: the PACS did not say).
        self._sizes: MutableMapping[str, int | None] = {} if sizes is None else sizes

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dicomweb-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def poll_once(self) -> list[str]:
        """One poll: analyse every new study; returns the ids of the new analyses."""
        client = self.pacs.require_client()
        since = datetime.now(UTC).date() - timedelta(days=self.lookback_days)
        created = []
        for found in client.search_studies(since):
            uid = str(found.get("StudyInstanceUID", ""))
            if not uid or uid in self._failed:
                continue
            if self.pacs.studies.find_by_study_uid(uid):
                self._sizes.pop(uid, None)
                continue
            if not self.settled(uid, found.get("NumberOfStudyRelatedInstances")):
                continue
            if self._stop.is_set():
                break
            try:
                if self.enqueue is not None:
                    queued = self.enqueue(uid)
                    created.extend([queued] if queued is not None else [])
                    continue
                analysis = self.pacs.analyse_remote_study(uid)
            except AnalysisInProgress:
                # Another worker or replica has it; its result shows up on the next poll.
                logger.debug("Watcher left study %s to the worker analysing it", short_id(uid))
                continue
            except (InvalidStudy, NotFound) as exc:
                # Not analysable (no CT slices, say): remember it, so it is not fetched every poll.
                self._failed.add(uid)
                logger.warning("Watcher skipped study %s: %s", short_id(uid), exc.detail)
                continue
            if analysis.created:
                created.append(analysis.record.study.id)
        return created

    def settled(self, uid: str, instances: Any) -> bool:
        """Whether a study has stopped growing: seen at the previous poll with the same number
        of instances (or, where the PACS does not say how many, seen at the previous poll)."""
        size = int(instances) if instances not in (None, "") else None
        previous = self._sizes.get(uid, -1)
        self._sizes[uid] = size
        if previous != size:
            return False
        del self._sizes[uid]
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.turn is not None and not self.turn():
                    continue
                created = self.poll_once()
                if created:
                    logger.info("Watcher analysed %d new studies from the PACS", len(created))
            except ServiceError as exc:
                logger.warning("Watcher poll failed: %s", exc.detail)
            except Exception:
                logger.exception("Watcher poll failed unexpectedly")
