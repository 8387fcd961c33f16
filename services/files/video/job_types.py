"""The job types of video processing: internal, created only by the files service.

The files service (owning ``jobs.create:job-types/video.probe`` and ``.../video.thumbnail``)
enqueues them for the uploading user; no caller may create them directly, because their
payload names a bucket and key the worker reads and writes.
"""

from __future__ import annotations

from services.files.video.payloads import PROBE_JOB, THUMBNAIL_JOB, VideoJobPayload
from services.jobs.job_types import INTERNAL, JobType

JOB_TYPES = (
    JobType(PROBE_JOB, INTERNAL, max_run_seconds=300, payload=VideoJobPayload),
    JobType(THUMBNAIL_JOB, INTERNAL, max_run_seconds=600, payload=VideoJobPayload),
)
