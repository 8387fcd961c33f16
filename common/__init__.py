"""mediagrid's shared package: settings, AWS clients, PostgreSQL, gRPC bootstrap, auth."""
