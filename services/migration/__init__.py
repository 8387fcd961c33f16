"""Importers of the pre-mediagrid data: local upload directory -> S3, Redis -> PostgreSQL."""
