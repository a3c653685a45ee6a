"""The gateway turns gRPC's EventEngine off by name (entrypoints.aiproxy.GRPC_IO_DEFAULTS): a grpcio
that no longer knows one of those experiments would print an unformatted error line on every start
and quietly keep its default I/O. This fails first, so whoever upgrades grpcio measures again."""

import os
import subprocess
import sys

from aiproxy.entrypoints.aiproxy import GRPC_IO_DEFAULTS

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
    env = {**os.environ, **GRPC_IO_DEFAULTS}
    result = subprocess.run([sys.executable, "-c", _SERVE_ONE_CALL], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "experiment" not in result.stderr.lower(), result.stderr
