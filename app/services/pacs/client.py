"""The few DICOMweb calls the service makes to the PACS, with errors turned into domain errors.

QIDO-RS finds studies and series, WADO-RS retrieves a series, STOW-RS stores objects back. An
unreachable PACS raises ``PacsUnavailable``, a refusal ``PacsError``, a missing study ``NotFound``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from app.core.errors import NotFound, PacsError, PacsUnavailable

if TYPE_CHECKING:
    from dicomweb_client.api import DICOMwebClient

    from app.core.config import Settings


class PacsClient:
    """The few DICOMweb calls the service makes, with errors turned into domain errors."""

    def __init__(self, url: str, username: str | None, password: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self._client: DICOMwebClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> PacsClient | None:
        if not settings.dicomweb_url:
            return None
        return cls(
            settings.dicomweb_url,
            settings.dicomweb_username,
            settings.dicomweb_password.get_secret_value(),
            settings.dicomweb_timeout_seconds,
        )

    @property
    def client(self) -> DICOMwebClient:
        if self._client is None:
            from dicomweb_client.api import DICOMwebClient
            from dicomweb_client.session_utils import create_session, create_session_from_user_pass

            session = (
                create_session_from_user_pass(self.username, self.password)
                if self.username
                else create_session()
            )
            self._client = DICOMwebClient(self.url, session=session, timeout=self.timeout)
        return self._client

    def call(self, action: str, function: Callable[[], Any]) -> Any:
        """Run one DICOMweb request; unreachable -> PacsUnavailable, refused -> PacsError."""
        import requests

        try:
            return function()
        except requests.exceptions.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else None
            if code == 404:
                raise NotFound(f"The PACS has nothing for {action}.") from exc
            if code in (401, 403):
                raise PacsError(
                    f"The PACS refused {action} (HTTP {code}): check ICH_DICOMWEB_USERNAME and "
                    "ICH_DICOMWEB_PASSWORD."
                ) from exc
            if code is not None and code >= 500:
                raise PacsUnavailable(f"The PACS failed {action} (HTTP {code}); try again later.") from exc
            raise PacsError(f"The PACS refused {action} (HTTP {code}).") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise PacsUnavailable(
                f"The PACS at {self.url} did not answer {action}; check that it is running and that "
                "ICH_DICOMWEB_URL is right."
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise PacsUnavailable(f"The PACS request for {action} failed: {type(exc).__name__}.") from exc

    def find_study(self, study_instance_uid: str) -> Dataset | None:
        results = self.call(
            "the study search (QIDO-RS)",
            lambda: self.client.search_for_studies(search_filters={"StudyInstanceUID": study_instance_uid}),
        )
        return Dataset.from_json(results[0]) if results else None

    def search_series(self, study_instance_uid: str) -> list[Dataset]:
        results = self.call(
            "the series search (QIDO-RS)",
            lambda: self.client.search_for_series(
                study_instance_uid, fields=["NumberOfSeriesRelatedInstances", "Modality"]
            ),
        )
        return [Dataset.from_json(item) for item in results]

    def search_studies(self, since: date | None, limit: int = 100) -> list[Dataset]:
        filters: dict[str, Any] = {"ModalitiesInStudy": "CT"}
        if since is not None:
            filters["StudyDate"] = f"{since:%Y%m%d}-"
        results = self.call(
            "the study search (QIDO-RS)",
            lambda: self.client.search_for_studies(
                search_filters=filters, limit=limit, fields=["NumberOfStudyRelatedInstances"]
            ),
        )
        return [Dataset.from_json(item) for item in results]

    def retrieve_series(self, study_instance_uid: str, series_instance_uid: str) -> list[Dataset]:
        return list(
            self.call(
                "the series retrieval (WADO-RS)",
                lambda: self.client.retrieve_series(study_instance_uid, series_instance_uid),
            )
        )

    def store(self, datasets: Sequence[Dataset], study_instance_uid: str) -> None:
        response = self.call(
            "storing the results (STOW-RS)",
            lambda: self.client.store_instances(list(datasets), study_instance_uid=study_instance_uid),
        )
        failed = getattr(response, "FailedSOPSequence", None) if response is not None else None
        if failed:
            raise PacsError(
                f"The PACS refused {len(failed)} of the {len(datasets)} result objects (STOW-RS)."
            )
