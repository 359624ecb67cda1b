"""Commands of the serving side: serve (one node) and score (a client call)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fpga_runtime.serve import add_arguments as add_serve_arguments

TOP_K = 5


def register(subparsers) -> None:
    serve = subparsers.add_parser("serve", help="Serve a service directory over gRPC (TF Serving, KServe v2, health).")
    add_serve_arguments(serve)
    serve.set_defaults(handler=_serve)

    score = subparsers.add_parser("score", help="Score images against a running server; prints the top-5 classes.")
    score.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    score.add_argument("--address", required=True, metavar="HOST:PORT", help="Server or gateway address.")
    score.add_argument("--model", default="", help="Model name (default: the server's only model).")
    score.add_argument("--token", default=None, help="API key, sent as 'authorization: Bearer <key>'.")
    score.add_argument("--ssl", action="store_true", help="Use TLS with the system's root certificates.")
    score.add_argument("--timeout", type=float, default=10.0, help="Deadline of each attempt, seconds (default 10).")
    score.add_argument("--retries", type=int, default=5, help="Retries on UNAVAILABLE or DEADLINE_EXCEEDED (default 5).")
    score.set_defaults(handler=_score)


def _serve(args: argparse.Namespace) -> int:
    from fpga_runtime.serve import run

    return run(args)


def _score(args: argparse.Namespace) -> int:
    from flows.cli import UsageError
    from fpga_runtime.client import PredictionClient

    host, separator, port = args.address.rpartition(":")
    if not separator or not host or not port.isdigit():
        raise UsageError(f"--address must be HOST:PORT, got {args.address!r}")
    if args.timeout <= 0 or args.retries < 0:
        raise UsageError("--timeout must be positive and --retries 0 or more")
    missing = [str(path) for path in args.images if not path.is_file()]
    if missing:
        raise UsageError(f"no such image file: {', '.join(missing)}")
    client = PredictionClient(
        host.strip("[]"),
        int(port),
        use_ssl=args.ssl,
        access_token=args.token,
        service_name=args.model,
        timeout=args.timeout,
        retries=args.retries,
    )
    with client:
        for path in args.images:
            probabilities = client.score_file(path)
            print(path)
            for name, probability in client.top_k(probabilities, k=TOP_K):
                print(f"  {probability:8.4f}  {name}")
    return 0
