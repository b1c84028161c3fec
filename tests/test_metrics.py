"""LCZ accuracy metrics against hand-computed values (a 3-class and a 17-class example)."""

import numpy as np
import pytest

from df4lcz_plugin.metrics import OA_W_WEIGHTS, confusion_matrix, lcz_metrics


def _cm3():
    """Reference rows / map columns over LCZ 1, 2 and D (codes 1, 2, 14)."""
    ref = [1] * 6 + [2] * 6 + [14] * 8
    pred = [1] * 5 + [2] + [1] * 2 + [2] * 3 + [14] + [14] * 8
    return confusion_matrix(ref, pred)


def test_three_class_example_by_hand():
    cm = _cm3()
    assert cm[0, 0] == 5 and cm[0, 1] == 1 and cm[1, 0] == 2 and cm[1, 13] == 1 and cm.sum() == 20
    m = lcz_metrics(cm)
    assert m["OA"] == pytest.approx(16 / 20)
    assert m["OA_u"] == pytest.approx(8 / 11)                       # [[5, 1], [2, 3]]
    assert m["OA_bu_wudapt"] == pytest.approx(19 / 20)              # (11 + 8) / (19 + 1)
    assert m["OA_bu_binary"] == pytest.approx(19 / 20)
    assert m["OA_w"] == pytest.approx((16 + 1 * 0.92 + 2 * 0.92 + 1 * 0.08) / 20)  # = 0.942
    pe = (6 * 7 + 6 * 4 + 8 * 9) / 400
    assert m["kappa"] == pytest.approx((0.8 - pe) / (1 - pe))       # 0.69466
    assert m["producer_accuracy"][0] == pytest.approx(5 / 6) and m["user_accuracy"][0] == pytest.approx(5 / 7)
    assert m["F1"][0] == pytest.approx(50 / 65)
    assert m["F1"][13] == pytest.approx(2 * 1 * (8 / 9) / (1 + 8 / 9))
    assert np.isnan(m["producer_accuracy"][5])  # LCZ 6 absent from the reference
    assert m["OA_B"] == pytest.approx(8 / 12) and m["OA_N"] == pytest.approx(8 / 8)
    assert m["weighted_F1"] == pytest.approx((6 * 50 / 65 + 6 * (2 * 0.5 * 0.75 / 1.25) + 8 * 16 / 17) / 20)


def test_seventeen_class_example_by_hand():
    # Each class: 10 correct; class k (k < 16) also has 2 cells mapped as class k+1; LCZ E (15) 3 as G (17).
    cm = np.eye(17, dtype=int) * 10
    for k in range(16):
        cm[k, k + 1] += 2
    cm[14, 16] += 3
    m = lcz_metrics(cm)
    total = 170 + 32 + 3
    assert m["n"] == total
    assert m["OA"] == pytest.approx(170 / total)
    assert m["OA_u"] == pytest.approx(100 / (100 + 9 * 2))  # the 1→2 … 9→10 confusions; 10→A leaves the block
    weighted = 170 + sum(2 * OA_W_WEIGHTS[k, k + 1] for k in range(16)) + 3 * OA_W_WEIGHTS[14, 16]
    assert m["OA_w"] == pytest.approx(weighted / total)
    # Built vs natural (WUDAPT): urban block 118; natural diagonal without E: 60; off-blocks: 10→A only (2).
    assert m["OA_bu_wudapt"] == pytest.approx((118 + 60) / (118 + 60 + 2))
    assert m["OA_bu_binary"] == pytest.approx((total - 2) / total)
    rows, cols = cm.sum(1), cm.sum(0)
    pe = sum(rows[k] * cols[k] for k in range(17)) / total ** 2
    assert m["kappa"] == pytest.approx((170 / total - pe) / (1 - pe))
    assert m["producer_accuracy"][14] == pytest.approx(10 / 15) and m["user_accuracy"][16] == pytest.approx(10 / 15)


def test_values_outside_1_17_are_ignored():
    cm = confusion_matrix([0, 1, 17, 255], [1, 1, 17, 3])
    assert cm.sum() == 2 and cm[0, 0] == 1 and cm[16, 16] == 1
