"""Fusion of maps computed at several layers into one map, as LayerCAM does.

Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for
Localization", IEEE TIP 30, 2021, eq. 9. Maps from shallow layers locate
fine detail but hold much smaller values than maps from deep layers, so
before the layers are combined each shallow map M is rescaled as

    M' = tanh(gamma * M / max(M)),   gamma = 2,

and the fused map is the element-wise maximum over the layers of the maps
resized to a common resolution (here the input's, bilinear with half-pixel
centres as every kerascam map). The paper rescales the shallow layers' maps
only, and leaves the deep one as it is; every layer's map is normalised
(divided by its maximum) first, so the deep map enters the maximum on the
same [0, 1] scale as the rescaled shallow ones and the fused map's peak is 1.

Which layer is "deep" is read from resolution, not position
(``unscaled_index``). In the paper's VGG16 the two agree: the shallow
layers are the early, fine ones, whose small values the tanh lifts, and the
deep layer is the last and coarsest. In a U-Net they disagree: its last
decoder layer is the finest and the one nearest the output. The rule kept
is the paper's reason for the scaling, fine layers lifted against the
coarse one, so the coarsest layer (``dec4_relu2`` of the U-Nets) is left
unscaled and every finer one (``dec3`` to ``dec1``) gets the tanh; by
position, the coarse decoder maps would be lifted and the fine ``dec1``
left as it is. As tanh(2) = 0.96, a shallow map
never exceeds the deep map's peak, while anything above half of a shallow
map's own peak reaches at least tanh(1) = 0.76: the fine layers add their
detail wherever they respond.

The order in which the layers are listed does not matter: the unscaled one is
the coarsest, and among equally coarse layers the one nearest the model's
output (last in the model's layer order). The
fusion is written in `keras.ops` on (n, H, W) maps so that the compiled
engines (TensorFlow's and JAX's) fuse in their graphs and the tf-keras-vis
backend fuses eagerly, all with the same arithmetic.

Other libraries differ: torchcam's `LayerCAM.fuse_cams` applies the tanh to
every layer's normalised map, deepest included; pytorch-grad-cam averages the
layers' normalised maps instead of taking their maximum.
"""

import keras

from kerascam.models.layers import get_layer_by_path, layer_order_key

GAMMA = 2.0  # the paper's gamma


def deepest_index(model, layer_names):
    """Position in `layer_names` of the layer nearest the output of `model`.

    Args:
        model: the Keras model holding the layers.
        layer_names: names of layers of `model`, or paths of layers of its
            nested sub-models ("outer/inner", see `kerascam.models.layers`).

    Returns:
        The index in `layer_names` of the layer that comes last in
        `model.layers` (a topological order of the graph); layers of a nested
        model are ordered by the nested model's place in `model.layers`, then
        by their own in its `layers`, and come before the nested model's own
        output (`kerascam.models.layers.layer_order_key`).
    """
    return max(range(len(layer_names)), key=lambda i: layer_order_key(model, layer_names[i]))


def unscaled_index(model, layer_names):
    """Position in `layer_names` of the layer whose map LayerCAM does not rescale.

    The coarsest layer: the fewest cells (height x width) in its output;
    among equally coarse layers, the one nearest the output
    (`deepest_index`). A model whose layers' sizes are not fixed (an input of
    any size) keeps the deepest layer, the paper's rule for networks that
    only pool, as the resolutions cannot be read.

    Args:
        model: the Keras model holding the layers.
        layer_names: names or paths ("outer/inner") of 4-D layers of `model`.

    Returns:
        An index into `layer_names`.
    """
    cells = []
    for name in layer_names:
        height, width = get_layer_by_path(model, name).output.shape[1:3]
        cells.append(None if height is None or width is None else height * width)
    if None in cells:
        return deepest_index(model, layer_names)
    coarsest = [i for i, count in enumerate(cells) if count == min(cells)]
    return max(coarsest, key=lambda i: layer_order_key(model, layer_names[i]))


def fuse_maps(maps, unscaled, gamma=GAMMA):
    """LayerCAM's fusion of maps of several layers, all at one resolution.

    Args:
        maps: a list of float32 (n, H, W) maps, one per layer, after the
            method's ReLU and resized to the same (H, W).
        unscaled: the index in `maps` of the deep (coarsest) layer's map,
            `unscaled_index`: divided by its maximum, not rescaled by tanh.
        gamma: the tanh's slope on the shallow maps. Default 2, the paper's.

    Returns:
        float32 tensor of the backend (n, H, W): per pixel the maximum over the layers of
        M / max(M) (the unscaled one) and tanh(gamma * M / max(M)) (the others). A map
        that is all zero contributes zeros; if any layer's map of an image is
        non-finite, the fused map of that image is NaN everywhere, so that
        `map_status` reports it as such instead of a partial fusion.
    """
    ops = keras.ops
    maps = [ops.cast(layer_map, "float32") for layer_map in maps]
    scaled = []
    for index, layer_map in enumerate(maps):
        peak = ops.max(layer_map, axis=(1, 2), keepdims=True)
        # All-zero maps stay zero instead of turning into 0 / 0.
        relative = ops.divide_no_nan(layer_map, peak)
        scaled.append(relative if index == unscaled else ops.tanh(gamma * relative))
    fused = ops.max(ops.stack(scaled), axis=0)
    finite = ops.all(ops.isfinite(ops.stack(maps)), axis=(0, 2, 3))
    return ops.where(finite[:, None, None], fused, ops.cast(float("nan"), "float32"))
