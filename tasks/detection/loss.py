"""The SSD loss: smooth-L1 localisation on positive priors + softmax confidence with hard negative mining.

Per image, every positive prior (matched to an object) counts in both terms; of the negative
priors only the ``negative_ratio`` x positives with the highest background loss count in the
confidence term (3:1 in SSD). The sum is divided by the number of positives in the batch.

The model's concatenated output is ``[N, P, 4 + classes + 1]`` (offsets, then class logits with
the background first); the targets are ``[N, P, 5]`` (encoded offsets, then the class index as a
float, 0 = background), made by :func:`fpgaflow.tasks.detection.boxes.match`.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def smooth_l1(difference: tf.Tensor) -> tf.Tensor:
    absolute = tf.abs(difference)
    return tf.where(absolute < 1.0, 0.5 * tf.square(difference), absolute - 0.5)


class SsdLoss(keras.losses.Loss):
    """Summed over the batch and divided by its positives (Keras' "sum" reduction of the per-image terms)."""

    def __init__(self, negative_ratio: float = 3.0, loc_weight: float = 1.0, name: str = "ssd_loss") -> None:
        super().__init__(name=name, reduction="sum")
        if negative_ratio < 0 or loc_weight < 0:
            raise ValueError(f"negative_ratio and loc_weight must not be negative, got {negative_ratio}, {loc_weight}")
        self.negative_ratio = negative_ratio
        self.loc_weight = loc_weight

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.cast(y_pred, tf.float32)
        labels = tf.cast(y_true[..., 4], tf.int32)
        positive = labels > 0
        positives = tf.reduce_sum(tf.cast(positive, tf.float32), axis=1)  # [N]

        loc = tf.reduce_sum(smooth_l1(y_pred[..., :4] - y_true[..., :4]), axis=-1)
        loc_loss = tf.reduce_sum(tf.where(positive, loc, 0.0), axis=1)

        confidence = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=y_pred[..., 4:])  # [N, P]
        negative_loss = tf.where(positive, 0.0, confidence)
        # Rank of each prior's background loss within its image (0 = hardest negative).
        order = tf.argsort(negative_loss, axis=1, direction="DESCENDING", stable=True)
        rank = tf.argsort(order, axis=1, stable=True)
        priors = tf.cast(tf.shape(labels)[1], tf.float32)
        negatives = tf.minimum(self.negative_ratio * positives, priors - positives)
        hard_negative = tf.cast(rank, tf.float32) < negatives[:, None]
        conf_loss = tf.reduce_sum(tf.where(positive | hard_negative, confidence, 0.0), axis=1)

        total_positives = tf.maximum(tf.reduce_sum(positives), 1.0)
        return (conf_loss + self.loc_weight * loc_loss) / total_positives
