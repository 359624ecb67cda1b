"""SSD-VGG object detection: the detector the original service offered beside its classifiers.

The pieces, one module each:

- :mod:`~tasks.ssd.priors`: the default boxes of every feature map (scales, aspect ratios);
- :mod:`~tasks.ssd.boxes`: IoU, matching priors to ground truth, box encoding with variances;
- :mod:`~tasks.ssd.model`: SSD300 on a VGG-16 backbone as a functional Keras model (the FPGA
  stage: preprocessed image in, one box-offset and one class-score tensor per feature map out);
- :mod:`~tasks.ssd.loss`: the SSD loss (smooth-L1 localisation + softmax confidence, 3:1 hard
  negative mining);
- :mod:`~tasks.ssd.detect`: decoding and per-class non-maximum suppression in numpy (the
  reference of the CPU stage), :mod:`~tasks.ssd.postprocess`: the same as an ONNX graph (the CPU
  stage a node runs);
- :mod:`~tasks.ssd.average_precision`: VOC mAP@0.5;
- :mod:`~tasks.ssd.annotations`, :mod:`~tasks.ssd.intake`, :mod:`~tasks.ssd.sample_data`: the
  detection dataset layout, its validation, and a sample set of handwritten digits on canvases;
- :mod:`~tasks.ssd.training`, :mod:`~tasks.ssd.export`, :mod:`~tasks.ssd.train_step`,
  :mod:`~tasks.ssd.conversion`, :mod:`~tasks.ssd.numerics`, :mod:`~tasks.ssd.registry`: the
  pipeline steps of a detector, shaped like the classifier's.

Coordinates: boxes are ``[ymin, xmin, ymax, xmax]`` normalised to the image (0..1) everywhere
inside the pipeline and on the wire; annotation files give pixels ``[xmin, ymin, xmax, ymax]``.
Class index 0 of the model's scores is the background; served ``classes`` index the class names.
"""
