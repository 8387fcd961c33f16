"""mediagrid's shared package: settings, AWS clients, PostgreSQL, gRPC bootstrap, auth."""

import os

# The suite starts helper processes (embedded PostgreSQL and S3, the worker) with
# fork+exec and never uses gRPC in a forked child, so gRPC's fork handlers only print
# "skipping fork() handlers" lines into a newcomer's terminal. gRPC reads this variable when
# it is first imported, which is why it is set here, before any module of ours imports it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
