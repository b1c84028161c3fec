"""The VHR stream of a loaded model at inference: patch footprint → SAM masks → object graph → GCN → P_VHR."""

from . import assets
from .graph import build_graph
from .sam import MaskGenerator, load_sam
from .vhr import MIN_COVERAGE, VHRError, open_vhr, overlaps, read_patch


class VHRStream:
    """P_VHR (17,) of 320 m footprints, or None where the imagery covers < 90 % or SAM finds no object.

    model: a LoadedModel with a ``vhr`` stream; its card gives the AMG settings and the graph rule.
    checkpoint: SAM checkpoint (default: MobileSAM from the asset loader).
    Raises VHRError (bad raster, no overlap with ``bounds``), sam.SAMError.
    """

    def __init__(self, model, vhr_path, srs_wkt, bounds, device, checkpoint=None):
        card = model.card.stream("vhr")
        self.srs_wkt = srs_wkt
        self.source = open_vhr(vhr_path)
        if not overlaps(self.source, bounds, srs_wkt):
            raise VHRError("The VHR raster does not overlap the extent; draw the extent over the imagery.")
        sam = load_sam(checkpoint or assets.fetch_member(assets.MOBILE_SAM), device)
        self.generator = MaskGenerator(sam, **card["sam"]["amg"])
        self.graph_rule = card["graph_rule"]
        self.gcn = model.modules["vhr"]
        self.device = device

    def probabilities(self, footprint):
        import torch

        rgb, coverage = read_patch(self.source, footprint, self.srs_wkt)
        if coverage < MIN_COVERAGE:
            return None
        graph = build_graph(rgb, self.generator(rgb), self.graph_rule)
        if graph.num_nodes == 0:
            return None
        with torch.inference_mode():
            p = self.gcn(torch.from_numpy(graph.x).to(self.device),
                         torch.from_numpy(graph.edge_index).to(self.device),
                         torch.from_numpy(graph.edge_weight).to(self.device),
                         torch.zeros(graph.num_nodes, dtype=torch.long, device=self.device))
        return p[0].float().cpu().numpy()

