"""One trace from an upload to its thumbnails: UploadVideo's span, the video.probe and
video.thumbnail jobs it leads to, run by the real (embedded) worker, share one trace id."""

from __future__ import annotations

import grpc
from mediagrid.files.v1 import video_service_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from common.runtime import running_suite
from common.settings import Settings
from common.telemetry import configure_telemetry
from services.jobs.worker.embedded import embedded_worker
from tests.e2e.e2e_support import processed_video, user_token


async def test_upload_probe_and_thumbnail_jobs_are_one_trace(settings: Settings) -> None:
    exporter = InMemorySpanExporter()
    telemetry = configure_telemetry(
        settings.model_copy(update={"service_name": "mediagrid-trace-test"}),
        span_exporter=exporter,
        set_global=False,
    )
    try:
        async with (
            running_suite(
                settings.model_copy(update={"video_thumbnail_times_seconds": [0.0]}),
                ("all",),
                port=0,
                interceptors=telemetry.server_interceptors(),
            ) as (server, ctx),
            grpc.aio.insecure_channel(server.address) as channel,
        ):
            token = await user_token(ctx, "traced@example.com")
            async with embedded_worker(ctx.settings, server, ctx):
                await processed_video(video_service_pb2_grpc.VideoServiceStub(channel), token)
    finally:
        telemetry.shutdown()
    spans = exporter.get_finished_spans()
    upload = [
        s
        for s in spans
        if s.name.endswith("VideoService/UploadVideo") and s.kind == SpanKind.SERVER
    ]
    assert len(upload) == 1
    trace_id = upload[0].context.trace_id
    runs = {s.name: s for s in spans if s.name.startswith("job video.")}
    assert set(runs) == {"job video.probe", "job video.thumbnail"}, sorted(runs)
    for run in runs.values():
        assert run.context.trace_id == trace_id, run.name
        assert run.kind == SpanKind.CONSUMER and run.parent is not None
        assert run.attributes is not None and run.attributes["mediagrid.job.attempt"] == 1
    # The thumbnail job was created while the probe ran: its run descends from the probe's.
    in_trace = {s.context.span_id: s for s in spans if s.context.trace_id == trace_id}
    ancestor = runs["job video.thumbnail"].parent
    chain = []
    while ancestor is not None and ancestor.span_id in in_trace:
        chain.append(in_trace[ancestor.span_id].name)
        ancestor = in_trace[ancestor.span_id].parent
    assert "job video.probe" in chain or upload[0].name in chain, chain
