"""The reusable upload engine (see ``engine.run_upload`` and docs/files.md)."""

from services.files.upload.engine import (
    HashCache,
    OnCommit,
    Progress,
    TransferProfile,
    UploadDeps,
    UploadItem,
    UploadStart,
    run_upload,
)

__all__ = [
    "HashCache",
    "OnCommit",
    "Progress",
    "TransferProfile",
    "UploadDeps",
    "UploadItem",
    "UploadStart",
    "run_upload",
]
