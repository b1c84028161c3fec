"""LCZ accuracy metrics against hand-computed values (a 3-class and a 17-class example, and the DF4LCZ
paper's OA_B / OA_N with a class absent)."""

import numpy as np
import pytest

from df4lcz_plugin.training.metrics import OA_W_WEIGHTS, confusion_matrix, lcz_metrics, paper_oa_b_n


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


def test_paper_oa_b_n_with_an_absent_class():
    """fusion.py's OA_B / OA_N on sklearn's matrix of the classes present: rows picked by position.

    Every class but one has 10 correct samples; LCZ 1 also has 2 mapped as LCZ 2; LCZ A has 4 correct and 6
    mapped as B. With LCZ 7 absent the 16 × 16 matrix's first 10 rows are LCZ 1–6, 8–10 and A; with LCZ E
    absent its last 7 rows are LCZ 10, A–D, F, G.
    """
    def cm_without(absent):
        cm = np.eye(17, dtype=int) * 10
        cm[0, 0], cm[0, 1] = 8, 2
        cm[10, 10], cm[10, 11] = 4, 6
        cm[absent - 1] = cm[:, absent - 1] = 0
        return cm

    cm = cm_without(7)
    fixed, paper = lcz_metrics(cm), paper_oa_b_n(cm)
    assert fixed["OA_B"] == pytest.approx(88 / 90)            # LCZ 1–6, 8–10: 8 + 8 × 10 of 90
    assert paper["OA_B_paper"] == pytest.approx(92 / 100)     # … and row A: + 4 of + 10
    assert fixed["OA_N"] == pytest.approx(64 / 70) == paper["OA_N_paper"]  # rows A–G either way
    cm = cm_without(15)
    fixed, paper = lcz_metrics(cm), paper_oa_b_n(cm)
    assert fixed["OA_B"] == pytest.approx(98 / 100) == paper["OA_B_paper"]  # rows 1–10 either way
    assert fixed["OA_N"] == pytest.approx(54 / 60)            # A–D, F, G: 4 + 5 × 10 of 60
    assert paper["OA_N_paper"] == pytest.approx(64 / 70)      # … and row 10: + 10 of + 10
    three = confusion_matrix([11, 11, 14, 17], [11, 14, 14, 17])  # k = 3: fusion.py's OA_B raises IndexError
    assert np.isnan(paper_oa_b_n(three)["OA_B_paper"]) and paper_oa_b_n(three)["OA_N_paper"] == pytest.approx(3 / 4)
    full = np.eye(17, dtype=int) * 10 + 1
    assert paper_oa_b_n(full) == {"OA_B_paper": lcz_metrics(full)["OA_B"], "OA_N_paper": lcz_metrics(full)["OA_N"]}
