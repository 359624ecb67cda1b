"""The pipeline, one package per stage in the order the pipeline runs: data, featurizers, training, registry,
conversion, numerics, packaging, deployment, operations. Each stage's Prefect tasks are in its ``steps`` module;
``kinds`` holds the model kinds (classifier, detector) the steps ask, ``detection`` the detector's own code."""
