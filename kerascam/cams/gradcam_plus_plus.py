"""Grad-CAM++ (Chattopadhay et al., "Grad-CAM++: Generalized Gradient-based
Visual Explanations for Deep Convolutional Networks", WACV 2018).

    w_k^c = sum_ij alpha_ij^kc ReLU(d Y^c / d A^k_ij),  Y^c = exp(y^c)

with the closed-form alphas of the paper's eq. 19, which only need the first
gradient g = d y^c / d A: alpha = g^2 / (2 g^2 + sum_ab A_ab g^3). As in the
authors' code, `tf_keras_vis.gradcam_plus_plus.GradcamPlusPlus` (the
reference) then divides the alphas of each channel by their spatial sum. y^c
is the class logit.

Since d Y^c / d A = exp(y^c) g, every weight carries the positive factor
exp(y^c), which cancels in the alphas and does not change the map's shape.
It is left out: the native maps here are the paper's divided by exp(y^c)
(tf-keras-vis' keep it), so a logit above about 88, whose exp overflows
float32, or below about -103, whose exp underflows to zero, still gives a
finite map, the same once normalised.
"""

import keras

from kerascam.cams.base import GradientCAM


class GradCAMPlusPlus(GradientCAM):
    name = "gradcam++"
    reference = ("tf_keras_vis.gradcam_plus_plus", "GradcamPlusPlus")

    @staticmethod
    def weights(activations, gradients, class_scores):
        """One weight per channel: tf-keras-vis' divided by exp(y^c).

        With g = d y^c / d A, the paper's eq. 19 uses the derivatives of
        Y^c = exp(y^c): D1 = Y^c g, D2 = D1 g, D3 = D2 g. Y^c cancels in

            alpha = D2 / (2 D2 + sum_ab A_ab D3) = g^2 / (2 g^2 + sum_ab A_ab g^3)

        (0 where g == 0), then alpha /= sum_ij alpha (per channel, if
        non-zero) and w_k = sum_ij alpha_ij ReLU(g_ij): the paper's weight
        over exp(y^c), a positive per-image scale. ``class_scores`` is unused.
        """
        del class_scores  # only the positive factor exp(y^c) depended on it
        ops = keras.ops
        second = gradients * gradients
        third = second * gradients
        activation_sums = ops.sum(activations, axis=(1, 2), keepdims=True)
        denominator = second * 2.0 + third * activation_sums
        denominator = denominator + ops.cast(second == 0.0, denominator.dtype)
        alphas = second / denominator
        alpha_sums = ops.sum(alphas, axis=(1, 2), keepdims=True)
        alphas = alphas / (alpha_sums + ops.cast(alpha_sums == 0.0, alpha_sums.dtype))
        return ops.sum(ops.relu(gradients) * alphas, axis=(1, 2), keepdims=True)
