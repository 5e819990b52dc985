"""The NeRF-rendering pre-training baseline (Ponder / PonderV2), the comparison method of the GS³ paper.

    model.renderer: volume        # in a pre-training config; gs3.model.build_model then builds PonderModel

Parts: `volume` (dense feature volume over each sample's box, from points or images), `unet3d` (the 3D
network refining it), `field` (trilinear lookup + MLP → NeuS SDF or density, and colour), `loss`
(PonderV2's colour / depth / SDF / free-space / eikonal terms), `model` (the whole). The geometry of volume
rendering (rays, sampling, compositing, trilinear lookup) is in `gs3.render.volume`.
"""

from gs3.ponder.model import PonderModel, PonderOutput

__all__ = ["PonderModel", "PonderOutput"]
