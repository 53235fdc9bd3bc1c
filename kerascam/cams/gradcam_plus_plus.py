"""Grad-CAM++ (Chattopadhay et al., "Grad-CAM++: Generalized Gradient-based
Visual Explanations for Deep Convolutional Networks", WACV 2018).

    w_k^c = sum_ij alpha_ij^kc ReLU(d Y^c / d A^k_ij),  Y^c = exp(y^c)

with the closed-form alphas of the paper's eq. 19, which only need the first
gradient g = d y^c / d A: alpha = g^2 / (2 g^2 + sum_ab A_ab g^3). As in the
authors' code, `tf_keras_vis.gradcam_plus_plus.GradcamPlusPlus` (the
reference) then divides the alphas of each channel by their spatial sum. y^c
is the class logit.

Because Y^c = exp(y^c), raw (native) maps carry a factor exp(y^c): the map's
shape does not depend on it, but a logit above about 88 overflows float32 and
the map comes out non-finite (`map_status` reports "nonfinite").
"""

import tensorflow as tf

from kerascam.cams.base import GradientCAM


class GradCAMPlusPlus(GradientCAM):
    name = "gradcam++"
    reference = ("tf_keras_vis.gradcam_plus_plus", "GradcamPlusPlus")

    @staticmethod
    def weights(activations, gradients, class_scores):
        """One weight per channel, as tf-keras-vis computes it.

        With Y^c = exp(y^c) and g = d y^c / d A, the paper's eq. 19 uses the
        derivatives of Y^c: D1 = Y^c g, D2 = D1 g, D3 = D2 g. Then

            alpha = D2 / (2 D2 + sum_ab A_ab D3)      (0 where D2 == 0)
            alpha /= sum_ij alpha                     (per channel, if non-zero)
            w_k = sum_ij alpha_ij ReLU(D1_ij)

        The order of operations is tf-keras-vis', so the two agree to rounding.
        """
        exp_scores = tf.exp(class_scores)[:, tf.newaxis, tf.newaxis, tf.newaxis]
        first = exp_scores * gradients
        second = first * gradients
        third = second * gradients
        activation_sums = tf.reduce_sum(activations, axis=(1, 2), keepdims=True)
        denominator = second * 2.0 + third * activation_sums
        denominator = denominator + tf.cast(second == 0.0, denominator.dtype)
        alphas = second / denominator
        alpha_sums = tf.reduce_sum(alphas, axis=(1, 2), keepdims=True)
        alphas = alphas / (alpha_sums + tf.cast(alpha_sums == 0.0, alpha_sums.dtype))
        return tf.reduce_sum(tf.nn.relu(first) * alphas, axis=(1, 2), keepdims=True)
