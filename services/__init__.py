"""The mediagrid services: users, jobs and files (each a subpackage)."""
