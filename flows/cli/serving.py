"""Commands of the serving side: serve (one node) and score (a client call)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fpgaflow.fpga_runtime.serve import add_arguments as add_serve_arguments

TOP_K = 5
DEFAULT_MIN_SCORE = 0.3


def register(subparsers) -> None:
    serve = subparsers.add_parser("serve", help="Serve a service directory over gRPC (TF Serving, KServe v2, health).")
    add_serve_arguments(serve)
    serve.set_defaults(handler=_serve)

    score = subparsers.add_parser(
        "score", help="Score images against a running server; prints the top-5 classes, or a detector's boxes with --detect."
    )
    score.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    score.add_argument("--address", required=True, metavar="HOST:PORT", help="Server or gateway address.")
    score.add_argument("--model", default="", help="Model name (default: the server's only model).")
    score.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help="File holding the API key sent as 'authorization: Bearer <key>' (default: the client_token setting, "
        "FPGAFLOW_CLIENT_TOKEN).",
    )
    score.add_argument("--token", help=argparse.SUPPRESS)
    add_tls_arguments(score)
    score.add_argument("--timeout", type=float, default=10.0, help="Deadline of each attempt, seconds (default 10).")
    score.add_argument("--retries", type=int, default=5, help="Retries on UNAVAILABLE or DEADLINE_EXCEEDED (default 5).")
    score.add_argument(
        "--detect",
        action="store_true",
        help="The model is a detector: print its detections and draw them on the image into a PNG.",
    )
    score.add_argument(
        "--out",
        type=Path,
        metavar="PNG",
        help="With --detect and one image: where the PNG goes (default: IMAGE_STEM.detections.png here).",
    )
    score.add_argument(
        "--min-score",
        type=float,
        default=DEFAULT_MIN_SCORE,
        help=f"With --detect: detections scoring below this are not shown (default {DEFAULT_MIN_SCORE}).",
    )
    score.set_defaults(handler=_score)


def _serve(args: argparse.Namespace) -> int:
    from fpgaflow.fpga_runtime.serve import run

    return run(args)


def _score(args: argparse.Namespace) -> int:
    from fpgaflow.flows.cli import UsageError
    from fpgaflow.fpga_runtime.client import PredictionClient

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
        access_token=access_token(args.token, args.token_file),
        service_name=args.model,
        timeout=args.timeout,
        retries=args.retries,
        **tls_options(args),
    )
    if args.out is not None and not (args.detect and len(args.images) == 1):
        raise UsageError("--out needs --detect and exactly one image")
    if not 0 <= args.min_score <= 1:
        raise UsageError(f"--min-score must be between 0 and 1, got {args.min_score}")
    with client:
        if args.detect:
            return _detect(client, args)
        for path in args.images:
            probabilities = client.score_file(path)
            print(path)
            for name, probability in client.top_k(probabilities, k=TOP_K):
                print(f"  {probability:8.4f}  {name}")
    return 0


def add_tls_arguments(parser: argparse.ArgumentParser, system_roots: bool = True) -> None:
    """``--ca-cert`` and ``--cert/--key`` (mutual TLS) of a command that calls a service; ``--ssl`` too (TLS with the
    system's roots) when ``system_roots``."""
    if system_roots:
        parser.add_argument("--ssl", action="store_true", help="Use TLS, trusting the system's root certificates.")
    parser.add_argument(
        "--ca-cert", type=Path, metavar="PEM", help="Use TLS, trusting the CA certificate(s) in this file (implies --ssl)."
    )
    parser.add_argument("--cert", type=Path, metavar="PEM", help="Client certificate for mutual TLS (with --key).")
    parser.add_argument("--key", type=Path, metavar="PEM", help="Private key of --cert (a file readable by you only).")


def tls_options(args: argparse.Namespace) -> dict:
    """The client's TLS keywords from :func:`add_tls_arguments`; a file that is missing is a usage error."""
    from fpgaflow.flows.cli import UsageError

    if (args.cert is None) != (args.key is None):
        raise UsageError("--cert and --key go together: a client certificate needs its private key")
    for option, path in (("--ca-cert", args.ca_cert), ("--cert", args.cert), ("--key", args.key)):
        if path is not None and not path.is_file():
            raise UsageError(f"{option} {path}: no such file")
    return {"use_ssl": getattr(args, "ssl", False), "ca_cert": args.ca_cert, "cert": args.cert, "key": args.key}


def access_token(token_on_command_line: str | None, token_file: Path | None) -> str | None:
    """The API key from ``--token-file``, else the client_token setting; None when neither gives one.

    A key given with ``--token`` is refused: every user of the machine sees a command line (``ps``).
    """
    from fpgaflow.flows.cli import UsageError
    from fpgaflow.fpga_runtime.settings import get_settings

    if token_on_command_line is not None:
        raise UsageError(
            "--token is not accepted: a key on the command line is visible to every user of this machine (ps); "
            "put it in a file readable by you only and pass --token-file PATH, or set FPGAFLOW_CLIENT_TOKEN"
        )
    if token_file is None:
        return get_settings().client_token or None
    try:
        token = token_file.read_text().strip()
    except OSError as error:
        raise UsageError(f"--token-file {token_file}: cannot read it ({error.strerror or error})") from None
    if not token or "\n" in token:
        raise UsageError(f"--token-file {token_file}: the file must hold exactly one API key on one line")
    return token


def _detect(client, args: argparse.Namespace) -> int:
    from fpgaflow.fpga_runtime.detections import draw_detections
    from fpgaflow.fpga_runtime.preprocessing import decode_image

    for path in args.images:
        data = path.read_bytes()
        image = decode_image(data)
        detections = client.detect_image(data).above(args.min_score)
        out = args.out or Path(f"{path.stem}.detections.png")
        draw_detections(image, detections).save(out, format="PNG")
        print(f"{path}: {len(detections)} detections (score >= {args.min_score:g}), drawn to {out}")
        for item in detections.to_dict(image.width, image.height):
            box = ", ".join(f"{value:.0f}" for value in item["box"])
            print(f"  {item['score']:8.4f}  {item['label']}  [{box}]")
    return 0
