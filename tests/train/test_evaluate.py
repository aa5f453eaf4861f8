"""The evaluator against AP computed by hand on tiny cases."""

import numpy as np
import pytest

from flow.train.evaluate import coco_ap50, load_wider_keep_lists, match_image, voc_ap, wider_ap

G = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
NONE = np.zeros((0, 4))


def test_perfect_detections_score_one():
    d = np.array([[0, 0, 10, 10, 0.9], [20, 20, 30, 30, 0.8]])
    assert wider_ap([(d, G, NONE)])["ap"] == pytest.approx(1.0)
    assert coco_ap50([(d, G, NONE)]) == pytest.approx(1.0)


def test_hand_computed_ap():
    # ranked: TP (p=1, r=.5), FP (p=.5), TP (p=2/3, r=1) -> AP = .5*1 + .5*2/3
    d = np.array([[0, 0, 10, 10, 0.9], [50, 50, 60, 60, 0.8], [20, 20, 30, 30, 0.7]])
    assert match_image(d, G).tolist() == [1, 0, 1]
    assert wider_ap([(d, G, NONE)])["ap"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(5 / 6)


def test_duplicates_are_false_positives_and_ignored_faces_are_neither():
    d = np.array([[0, 0, 10, 10, 0.9], [0, 0, 10, 10, 0.8], [40, 40, 50, 50, 0.7]])
    ignore = np.array([[40, 40, 50, 50]], float)
    assert match_image(d, G[:1], ignore).tolist() == [1, 0, -1]
    # one face found, one duplicate FP above it in rank? no: TP first (p=1, r=1), then FP -> AP = 1
    assert wider_ap([(d, G[:1], ignore)])["ap"] == pytest.approx(1.0)
    # half the faces missed: AP = recall reached = .5
    assert wider_ap([(d[:1], G, NONE)])["ap"] == pytest.approx(0.5)


def test_iou_threshold_is_half():
    shifted = np.array([[0, 0, 10, 15, 0.9]])  # IoU 10*10/(10*15) = .667 -> match
    far = np.array([[0, 0, 10, 21, 0.9]])  # IoU 100/210 = .476 -> no match
    assert match_image(shifted, G[:1]).tolist() == [1]
    assert match_image(far, G[:1]).tolist() == [0]


def test_official_keep_lists_are_read(tmp_path):
    from scipy.io import savemat

    files = np.empty((1, 1), object)
    files[0, 0] = np.array([[np.array(["0_Parade_1"])], [np.array(["0_Parade_2"])]], object)
    keep = np.empty((1, 1), object)
    keep[0, 0] = np.array([[np.array([[1], [3]])], [np.array([[2]])]], object)
    for s in ("easy", "medium", "hard"):
        savemat(tmp_path / f"wider_{s}_val.mat", {"file_list": files, "gt_list": keep})
    lists = load_wider_keep_lists(tmp_path)
    assert lists["hard"] == {"0_Parade_1": {0, 2}, "0_Parade_2": {1}}
