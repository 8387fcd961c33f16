"""The files service: streaming uploads into S3, downloads, presigned URLs, versions, sharing."""
