"""Grad-CAM++ (Chattopadhay et al., "Grad-CAM++: Generalized Gradient-based
Visual Explanations for Deep Convolutional Networks", WACV 2018).

    w_k^c = sum_ij alpha_ij^kc ReLU(d Y^c / d A^k_ij),  Y^c = exp(y^c)

with the closed-form alphas of the paper's eq. 19, which only need the first
gradient g = d y^c / d A: alpha = g^2 / (2 g^2 + sum_ab A_ab g^3). As in the
authors' code, `tf_keras_vis.gradcam_plus_plus.GradcamPlusPlus` then divides
the alphas of each channel by their spatial sum. y^c is the class logit.

Because Y^c = exp(y^c), raw (native) maps carry a factor exp(y^c): the map's
shape does not depend on it, but a logit above about 88 overflows float32 and
the map comes out non-finite (`map_status` reports "nonfinite").
"""

from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus

from kerascam.cams.base import BaseCAM


class GradCAMPlusPlus(BaseCAM):
    name = "gradcam++"
    visualizer_class = GradcamPlusPlus
