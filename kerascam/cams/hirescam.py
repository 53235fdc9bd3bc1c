"""HiResCAM (Draelos and Carin, "Use HiResCAM instead of Grad-CAM for faithful
explanations of convolutional neural networks", arXiv:2011.08891, 2020).

    L^c = ReLU(sum_k g^k * A^k),  g = d y^c / d A

element-wise, with the gradient's sign kept. When the target layer is
followed only by global average pooling and a dense layer, every gradient
channel is constant over space and equals its mean, so HiResCAM equals
GradCAM; elsewhere GradCAM's averaging can credit locations that did not
raise the score, which HiResCAM avoids. y^c is the class logit. tf-keras-vis
has no HiResCAM: it is computed by the kerascam backend only.
"""

from kerascam.cams.base import GradientCAM


class HiResCAM(GradientCAM):
    name = "hirescam"
    reference = None  # not in tf-keras-vis

    @staticmethod
    def weights(activations, gradients, class_scores):
        """One weight per element: its gradient."""
        del activations, class_scores
        return gradients
