"""The gateway turns gRPC's EventEngine off by name (entrypoints.aiproxy.GRPC_IO_DEFAULTS), on the
grpcio series it was measured on. There, gRPC must know every name: an unknown one is a plain-text
error line on each start and the I/O left as it was. Any other series keeps gRPC's defaults."""

import os
import subprocess
import sys
from importlib import metadata

import pytest

from aiproxy.entrypoints import aiproxy as entrypoint

_SERVE_ONE_CALL = """
import asyncio, grpc

async def main():
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            await channel.unary_unary("/no.Such/Method")(b"", timeout=5)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNIMPLEMENTED, exc
    await server.stop(None)

asyncio.run(main())
"""


def test_grpc_knows_the_experiments_the_gateway_turns_off():
    defaults = entrypoint.grpc_io_defaults()
    if not metadata.version("grpcio").startswith(entrypoint.GRPC_IO_MEASURED_ON):
        assert defaults == {}
        pytest.skip(f"grpcio {metadata.version('grpcio')} keeps gRPC's own I/O (measure it, then extend GRPC_IO_MEASURED_ON)")
    assert defaults == entrypoint.GRPC_IO_DEFAULTS
    result = subprocess.run([sys.executable, "-c", _SERVE_ONE_CALL], env={**os.environ, **defaults},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "experiment" not in result.stderr.lower(), result.stderr


def test_another_grpcio_series_keeps_grpcs_own_io(monkeypatch):
    monkeypatch.setattr(entrypoint.metadata, "version", lambda name: "9.99.0")
    assert entrypoint.grpc_io_defaults() == {}
