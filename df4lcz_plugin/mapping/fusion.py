"""DF4LCZ decision-level fusion (Wu et al. 2024, §fusion module; ctrlovefly/DF4LCZ ``fusion.py``).

P = α·P_S2 + (1 − α)·P_VHR, with α from the model card (the paper: 0.6). Both inputs are the probabilities of
the same patch, matched by its cell (row, col), never by list order.
"""

import numpy as np
import numpy.typing as npt


def fuse(p_s2: npt.NDArray[np.floating], p_vhr: npt.NDArray[np.floating],
         alpha: float) -> npt.NDArray[np.floating]:
    """α·p_s2 + (1−α)·p_vhr for arrays of class probabilities (17,) or (17, …); α in [0, 1].

    Raises ValueError for α outside [0, 1] or mismatched shapes.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"fusion weight alpha={alpha} is outside [0, 1]")
    if p_s2.shape != p_vhr.shape:
        raise ValueError(f"cannot fuse probabilities of shapes {p_s2.shape} and {p_vhr.shape}")
    return alpha * p_s2 + (1.0 - alpha) * p_vhr
