"""Conversion: the Keras stages to ONNX with tf2onnx, and the parity of onnxruntime with Keras."""
