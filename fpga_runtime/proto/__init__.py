"""Generated protobuf modules (scripts/gen-protos) of the wire-compatible TF Serving and Open Inference Protocol messages."""
