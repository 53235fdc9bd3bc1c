"""Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks
via Gradient-based Localization", ICCV 2017).

    L^c = ReLU(sum_k w_k^c A^k),  w_k^c = mean_ij d y^c / d A^k_ij

with y^c the class logit (the kerascam models output logits, so no
`ReplaceToLinear` is needed) and A the target layer's activations. Computed by
`tf_keras_vis.gradcam.Gradcam`; the base's hook is used unchanged.
"""

from tf_keras_vis.gradcam import Gradcam

from kerascam.cams.base import BaseCAM


class GradCAM(BaseCAM):
    name = "gradcam"
    visualizer_class = Gradcam
