"""Studies as jobs, run in the service's own process on a small pool of threads, or on the worker
processes of the job queue (``app.services.queue``, when ``ICH_JOB_QUEUE_URL`` is set).

| module | what |
| --- | --- |
| :mod:`.service` | ``StudyJobs``, the one object the service and the workers use: hand a job to a worker, wait for it |
| :mod:`.intake` | the requests that queue a job: the upload or the PACS claim checked, the row and inputs stored |
| :mod:`.runner` | one attempt at a job: the row taken, the study analysed and stored, or why it failed |
| :mod:`.recovery` | the jobs a stopped process left, queued again or given up, at start and periodically |
| :mod:`.attempts` | what a job is made of: its states, what it is asked, one attempt (``JobRun``) and its owner |
"""

from app.services.jobs.service import MAX_WAIT_SECONDS, JobMetrics, StudyJobs

__all__ = ["MAX_WAIT_SECONDS", "JobMetrics", "StudyJobs"]
