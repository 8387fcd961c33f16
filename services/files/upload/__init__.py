"""The reusable upload engine (see ``engine.run_upload`` and docs/files.md)."""

from services.files.upload.engine import UploadDeps, UploadItem, run_upload
from services.files.upload.hash_cache import HashCache
from services.files.upload.parts import Progress
from services.files.upload.session import TransferProfile, UploadStart

__all__ = [
    "HashCache",
    "Progress",
    "TransferProfile",
    "UploadDeps",
    "UploadItem",
    "UploadStart",
    "run_upload",
]
