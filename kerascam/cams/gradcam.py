"""Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks
via Gradient-based Localization", ICCV 2017).

    L^c = ReLU(sum_k w_k^c A^k),  w_k^c = mean_ij d y^c / d A^k_ij

with y^c the class logit (the kerascam models output logits, so no
`ReplaceToLinear` is needed) and A the target layer's activations. The
reference is `tf_keras_vis.gradcam.Gradcam`.
"""

import keras

from kerascam.cams.base import GradientCAM


class GradCAM(GradientCAM):
    name = "gradcam"
    reference = ("tf_keras_vis.gradcam", "Gradcam")

    @staticmethod
    def weights(activations, gradients, class_scores):
        """One weight per channel: the spatial mean of its gradient."""
        del activations, class_scores
        return keras.ops.mean(gradients, axis=(1, 2), keepdims=True)
