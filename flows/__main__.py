import sys

from fpgaflow.flows.cli import main

sys.exit(main())
