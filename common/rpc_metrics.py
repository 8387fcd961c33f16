"""RPC server metrics after the OpenTelemetry RPC conventions: duration and calls in flight.

Attributes: ``rpc.system`` (grpc), ``rpc.service``, ``rpc.method``,
``mediagrid.rpc.streaming`` and, on the duration, ``rpc.grpc.status_code``. The instruments belong to the active telemetry configuration and
are made once per configuration; with metrics off they are the API's no-ops.
"""

from __future__ import annotations

from opentelemetry import metrics

from common import telemetry

_SCOPE = "mediagrid.rpc"


class RpcMetrics:
    def __init__(self, meter: metrics.Meter) -> None:
        self.duration = meter.create_histogram(
            "rpc.server.duration",
            unit="ms",
            description="Duration of RPCs served, per service, method and status code.",
        )
        self.active = meter.create_up_down_counter(
            "rpc.server.active_requests",
            unit="{request}",
            description="RPCs being served right now, per service and method.",
        )

    @staticmethod
    def attributes(method: str, *, streaming: bool = False) -> dict[str, str]:
        """``/pkg.Service/Method`` as the convention's attributes, and whether it streams
        (a stream's duration is its lifetime: latency alarms look at unary calls only)."""
        _, _, rest = method.partition("/")
        service, _, name = rest.partition("/")
        return {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": name,
            "mediagrid.rpc.streaming": "true" if streaming else "false",
        }


_by_configuration: dict[int, tuple[object, RpcMetrics]] = {}


def rpc_metrics() -> RpcMetrics:
    """The instruments of the active configuration (made on first use)."""
    owner = telemetry.active()
    key = id(owner)
    cached = _by_configuration.get(key)
    if cached is not None and cached[0] is owner:
        return cached[1]
    made = RpcMetrics(telemetry.get_meter(_SCOPE))
    _by_configuration.clear()  # one configuration is active at a time
    _by_configuration[key] = (owner, made)
    return made
