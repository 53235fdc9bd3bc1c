"""LayerCAM (Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation
Maps for Localization", IEEE TIP 30, 2021).

    L^c = ReLU(sum_k ReLU(g^k) * A^k),  g = d y^c / d A

element-wise: every activation is weighted by its own positive gradient
instead of a channel's mean, so the map keeps the detail of shallow, high
resolution layers, where GradCAM's channel-wide weights blur it away. That
makes the method worth computing at several layers: a list of target layers
is fused as the paper does (`kerascam/cams/fusion.py`), and the evaluation
scores it so (`fused_in_experiment`) at `kerascam.models.fusion_layer_names`.
y^c is the class logit. The reference is `tf_keras_vis.layercam.Layercam`
(one layer per call).
"""

import keras

from kerascam.cams.base import GradientCAM


class LayerCAM(GradientCAM):
    name = "layercam"
    reference = ("tf_keras_vis.layercam", "Layercam")
    fused_in_experiment = True

    @staticmethod
    def weights(activations, gradients, class_scores):
        """One weight per element: its gradient where positive, else 0."""
        del activations, class_scores
        return keras.ops.relu(gradients)
