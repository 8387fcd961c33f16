"""The jobs service: a PostgreSQL job queue (JobService) and its worker protocol (WorkerService)."""
