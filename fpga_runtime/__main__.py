"""``python -m fpgaflow.fpga_runtime SERVICE_DIR [--host H] [--port N] [--metrics-port N] [--device PROFILE] [--devices N]``.

The serving image's entry point: the same node as ``fpgaflow serve``, with the runtime-only install.
"""

import argparse
import sys

from fpgaflow.fpga_runtime.errors import FpgaflowError
from fpgaflow.fpga_runtime.serve import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fpgaflow.fpga_runtime", description="Serve one fpgaflow service directory.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (FpgaflowError, FileNotFoundError) as error:
        print(f"fpga_runtime: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
