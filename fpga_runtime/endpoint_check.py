"""Score one made-up image through an endpoint and print what came back: the smoke test the kubernetes target
runs as a Job inside the cluster, through the model's Service.

``python -m fpgaflow.fpga_runtime.endpoint_check HOST:PORT --model NAME [--ca-cert PEM] [--cert PEM --key PEM]
[--keys-file PATH]`` prints one JSON line (``{"endpoint", "model", "outputs": {name: shape}}``) and exits 0
when every output is finite; otherwise it prints the reason on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from fpgaflow.fpga_runtime import codec
from fpgaflow.fpga_runtime.client import PredictionClient
from fpgaflow.fpga_runtime.cluster.security import read_api_keys
from fpgaflow.fpga_runtime.errors import FpgaflowError
from fpgaflow.fpga_runtime.protocol import IMAGES_INPUT

IMAGE_SIDE = 64


def check_image() -> bytes:
    """A small JPEG with a gradient, the same every time."""
    ramp = np.linspace(0, 255, IMAGE_SIDE, dtype=np.uint8)
    pixels = np.stack(
        [np.tile(ramp, (IMAGE_SIDE, 1)), np.tile(ramp[:, None], (1, IMAGE_SIDE)), np.full((IMAGE_SIDE,) * 2, 128, np.uint8)],
        axis=-1,
    )
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def check_endpoint(client: PredictionClient) -> dict[str, list[int]]:
    """The shape of every output of one Predict call; an output that is not finite is an error."""
    outputs = client.predict({IMAGES_INPUT: codec.numpy_to_tensor_proto([check_image()])})
    if not outputs:
        raise FpgaflowError("the endpoint answered with no output")
    for name, array in outputs.items():
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise FpgaflowError(f"output {name!r} holds values that are not finite")
    return {name: list(array.shape) for name, array in outputs.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fpgaflow.fpga_runtime.endpoint_check", description=__doc__.splitlines()[0])
    parser.add_argument("endpoint", metavar="HOST:PORT")
    parser.add_argument("--model", default="", help="Model name (default: the server's only model).")
    parser.add_argument("--ca-cert", type=Path, help="CA certificate to trust (turns TLS on).")
    parser.add_argument("--cert", type=Path, help="Client certificate for mutual TLS.")
    parser.add_argument("--key", type=Path, help="Private key of --cert.")
    parser.add_argument("--keys-file", type=Path, help="API key file; its first key is sent.")
    parser.add_argument("--timeout", type=float, default=30.0, help="Deadline of each attempt, seconds.")
    args = parser.parse_args(argv)
    host, _, port = args.endpoint.rpartition(":")
    try:
        token = read_api_keys(args.keys_file)[0] if args.keys_file else None
        with PredictionClient(
            host,
            int(port),
            access_token=token,
            service_name=args.model,
            timeout=args.timeout,
            ca_cert=args.ca_cert,
            cert=args.cert,
            key=args.key,
        ) as client:
            shapes = check_endpoint(client)
    except (FpgaflowError, ValueError) as error:
        print(f"endpoint check of {args.endpoint}: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"endpoint": args.endpoint, "model": args.model, "outputs": shapes}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
