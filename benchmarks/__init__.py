"""`fpgaflow bench`: batch-1 latency, throughput and memory of the served model, side by side with
the usual CPU paths and the machine's own limit, measured in one run (see benchmarks/README.md)."""
