"""An archive submission started over HTTP: it runs in the background of the entry task
that took it, and its report (progress, then final) is kept in the shared payload store,
so any entry task answers ``GET /admin/batch/submissions/{id}``."""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable

from sevensense.archive.submit import SubmitReport
from sevensense.errors import SevensenseError, StorageError, SubmissionNotFoundError
from sevensense.storage.objects import ObjectStore

log = logging.getLogger(__name__)

PREFIX = "archive-submissions/"
SAVE_EVERY_S = 2.0
_ID = re.compile(r"^[0-9a-f]{32}$")


class Submissions:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def key(self, submission_id: str) -> str:
        if not _ID.match(submission_id):
            raise SubmissionNotFoundError(f"no submission {submission_id!r}")
        return f"{PREFIX}{submission_id}.json"

    def save(self, submission_id: str, report: SubmitReport) -> None:
        self.store.put_bytes(
            self.key(submission_id), report.model_dump_json().encode(), "application/json"
        )

    def get(self, submission_id: str) -> SubmitReport:
        key = self.key(submission_id)
        try:
            return SubmitReport.model_validate_json(self.store.get_bytes(key))
        except StorageError as exc:
            raise SubmissionNotFoundError(f"no submission {submission_id!r}") from exc

    def start(
        self, source: str, run: Callable[[SubmitReport, Callable[[SubmitReport], None]], None]
    ) -> str:
        """Saves the first report, then ``run(report, on_progress)`` on a thread of its own;
        an error ends the submission with it recorded as the report's last failure."""
        submission_id = uuid.uuid4().hex
        report = SubmitReport(source=source)
        self.save(submission_id, report)
        last = [time.monotonic()]

        def progress(current: SubmitReport) -> None:
            if time.monotonic() - last[0] >= SAVE_EVERY_S:
                last[0] = time.monotonic()
                self.save(submission_id, current)

        def body() -> None:
            try:
                run(report, progress)
            except Exception as exc:  # the report is the only place anyone will look
                code = exc.code if isinstance(exc, SevensenseError) else "internal_error"
                report.fail(source, code, str(exc))
                report.finished = True
                log.exception("archive submission %s failed", submission_id)
            self.save(submission_id, report)

        threading.Thread(target=body, name=f"archive-{submission_id[:8]}", daemon=True).start()
        return submission_id
