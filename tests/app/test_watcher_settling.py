"""The PACS watcher analyses a study only once it has stopped growing."""

from __future__ import annotations

from typing import Any

from app.services.pacs import StudyWatcher


def watcher() -> StudyWatcher:
    pacs: Any = None
    return StudyWatcher(pacs, interval=1.0)


def test_a_study_is_analysed_once_two_polls_see_the_same_number_of_instances() -> None:
    seen = watcher()
    assert not seen.settled("1.2.3", 2)  # first seen, still arriving perhaps
    assert not seen.settled("1.2.3", 4)  # it grew
    assert seen.settled("1.2.3", "4")  # unchanged since the last poll: complete
    # Asked again after that (another worker had it, say), it waits one more poll.
    assert not seen.settled("1.2.3", 4)
    assert seen.settled("1.2.3", 4)


def test_without_a_count_from_the_pacs_a_study_waits_one_poll() -> None:
    seen = watcher()
    assert not seen.settled("1.2.4", None)
    assert seen.settled("1.2.4", "")
    assert not seen.settled("1.2.5", 3)
    assert not seen.settled("1.2.6", 3)  # studies are followed apart
    assert seen.settled("1.2.5", 3)
