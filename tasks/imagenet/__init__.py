"""The default ImageNet classifier of the original quick start: a featurizer with its Keras ImageNet top.

Nothing is trained: the featurizer and its 1,000-class top come from keras.applications' ImageNet file
(obtained by :mod:`fpgaflow.tasks.featurizers.weights_store`). The data is a folder of unlabelled images
the user passes (``--calibration DIR``): they calibrate int8 and, lacking labelled ImageNet data, the
numerics gate compares each format's top-1 and top-5 with fp32 on them. The kind record is
:data:`fpgaflow.tasks.kinds.imagenet.IMAGENET_CLASSIFIER`.
"""
