"""SSD-VGG object detection: the detector the original service offered beside its classifiers.

The pieces, one module each:

- :mod:`~fpgaflow.tasks.detection.priors`: the default boxes of every feature map (scales, aspect ratios);
- :mod:`~fpgaflow.tasks.detection.boxes`: IoU, matching priors to ground truth, box encoding with variances;
- :mod:`~fpgaflow.tasks.detection.model`: SSD300 on a VGG-16 backbone as a functional Keras model (the FPGA
  stage: preprocessed image in, one box-offset and one class-score tensor per feature map out);
- :mod:`~fpgaflow.tasks.detection.loss`: the SSD loss (smooth-L1 localisation + softmax confidence, 3:1 hard
  negative mining);
- :mod:`~fpgaflow.tasks.detection.detect`: decoding and per-class non-maximum suppression in numpy (the
  reference of the CPU stage), :mod:`~fpgaflow.tasks.detection.postprocess`: the same as an ONNX graph (the CPU
  stage a node runs);
- :mod:`~fpgaflow.tasks.detection.average_precision`: VOC mAP@0.5;
- :mod:`~fpgaflow.tasks.detection.annotations`, :mod:`~fpgaflow.tasks.detection.intake`,
  :mod:`~fpgaflow.tasks.detection.sample_data`: the detection dataset layout, its validation, and a sample set of
  handwritten digits on canvases;
- :mod:`~fpgaflow.tasks.detection.training`, :mod:`~fpgaflow.tasks.detection.export`,
  :mod:`~fpgaflow.tasks.detection.train_step`, :mod:`~fpgaflow.tasks.detection.registration`,
  :mod:`~fpgaflow.tasks.detection.conversion`, :mod:`~fpgaflow.tasks.detection.numerics`,
  :mod:`~fpgaflow.tasks.detection.smoke`: what the detector kind (:mod:`fpgaflow.tasks.kinds.detector`) does in each stage.

Coordinates: boxes are ``[ymin, xmin, ymax, xmax]`` normalised to the image (0..1) everywhere
inside the pipeline and on the wire; annotation files give pixels ``[xmin, ymin, xmax, ymax]``.
Class index 0 of the model's scores is the background; served ``classes`` index the class names.
"""
