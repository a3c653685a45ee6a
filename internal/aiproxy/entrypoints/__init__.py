"""The command-line programs: `aiproxy` (the gateway) and `logdb`.

gRPC C-core reads its log level once, when grpc is imported; unset, it prints INFO lines in its own
plain-text format, one per failed TLS handshake (a client without the required certificate, a
scanner, a peer whose certificate is not trusted): into the gateway's JSON-lines stderr, and before
logdb's one-line error. Set here, before either program imports grpc; an operator's value wins.
"""

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
