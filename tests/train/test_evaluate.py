"""The evaluator against AP worked out by hand on tiny cases, one per rule of the official WIDER FACE evaluation
(eval_tools' evaluation.m), with the ground truth in the official .mat layout (cell arrays written by savemat).

Scores in the cases are binary fractions (0.75, 0.5, 0.25) so the min-max normalised values are exact: 1, 0.5, 0.
Thresholds are 1 - t/1000, t = 1..1000, so a normalised 1 passes every threshold, 0.5 passes from t = 500 on and 0
only the last one (t = 1000).
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from flow.errors import FlowError
from flow.train.evaluate import (
    GroundTruth,
    coco_ap50,
    detect_box_format,
    evaluate_prediction_dir,
    load_wider_mat_ground_truth,
    match_image,
    normalised_scores,
    official_overlaps,
    parse_prediction_text,
    read_prediction_dir,
    voc_ap,
    wider_evaluate,
)


def one_image(faces, keep, dets, setting="hard"):
    """Evaluate one image: faces `x y w h`, keep 0-based indices, dets `x y w h score` -> that setting's result."""
    gt = GroundTruth(["0--E/img"], [np.asarray(faces, float).reshape(-1, 4)], {setting: [np.asarray(keep, int)]})
    return wider_evaluate(gt, [np.asarray(dets, float).reshape(-1, 5)])[setting]


def cell(items):
    c = np.empty((len(items), 1), object)
    for i, x in enumerate(items):
        c[i, 0] = x
    return c


def write_mats(d, events, keeps, setting_extra=None):
    """events {event: {image: [[x, y, w, h], ...]}}; keeps {setting: {image: [1-based indices]}} -> the four .mat
    files in the official structure (event_list, file_list, face_bbx_list in wider_face_val.mat; gt_list in the
    setting files, plus whatever setting_extra adds)."""
    from scipy.io import savemat

    names = list(events)
    savemat(d / "wider_face_val.mat", {
        "event_list": cell(names),
        "file_list": cell([cell(list(events[e])) for e in names]),
        "face_bbx_list": cell([cell([np.asarray(b, float).reshape(-1, 4) for b in events[e].values()])
                               for e in names]),
    })
    for s in ("easy", "medium", "hard"):
        k = keeps.get(s, keeps.get("hard", {}))
        gl = cell([cell([np.asarray(k.get(img, []), float).reshape(-1, 1) for img in events[e]]) for e in names])
        savemat(d / f"wider_{s}_val.mat", {"gt_list": gl, **(setting_extra or {})})
    return d


def write_preds(d, preds):
    """preds {"event/image": [[x, y, w, h, score], ...]} -> WIDER prediction txts."""
    for name, rows in preds.items():
        f = d / f"{name}.txt"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("\n".join([name.split("/")[1], str(len(rows))] + [" ".join(map(str, r)) for r in rows]) + "\n")
    return d


# ---------------------------------------------------------------------------------------------- the rules
def test_an_image_without_faces_is_skipped_but_its_scores_normalise(tmp_path):
    # a1: one face, found by a det scoring 0.5; a2: no face, two dets scoring 0.75 and 0.25. Normalised over all
    # predictions (a2's included) a1's det is 0.5: from t = 500 on precision 1/1, recall 1/1 -> AP 1.
    # Had a2's dets counted, its 0.75 false positive would rank first: AP 0.5 (recall 1 reached at precision 1/2).
    write_mats(tmp_path, {"0--E": {"a1": [[0, 0, 10, 10]], "a2": np.zeros((0, 4))}}, {"hard": {"a1": [1]}})
    gt = load_wider_mat_ground_truth(tmp_path)
    assert gt.names == ["0--E/a1", "0--E/a2"] and gt.faces[1].shape == (0, 4)
    preds = [np.array([[0, 0, 10, 10, 0.5]]), np.array([[50, 50, 10, 10, 0.75], [0, 0, 5, 5, 0.25]])]
    r = wider_evaluate(gt, preds)["hard"]
    assert r["ap"] == pytest.approx(1.0)
    assert np.isnan(r["precision"][498]) and r["precision"][499] == 1.0  # t = 499: nothing passes; t = 500: a1's det


def test_overlap_counts_pixels_inclusively():
    # face 0 0 10 10 spans pixels 0..10 (11 x 11 = 121); det 0 0 10 21 spans 11 x 22 = 242 and contains the face:
    # IoU 121/242 = 0.5 -> a hit. Exclusive areas would give 100/210 = 0.476, a miss. One pixel taller: 121/253.
    face = [[0, 0, 10, 10]]
    assert official_overlaps(np.array([[0, 0, 10, 21]]), np.array(face))[0, 0] == 0.5
    assert official_overlaps(np.array([[0, 0, 10, 22]]), np.array(face))[0, 0] == pytest.approx(121 / 253)
    # two dets (0.75 on the face, 0.25 elsewhere): the hit ranks first -> precision 1 at recall 1 -> AP 1
    assert one_image(face, [0], [[0, 0, 10, 21, 0.75], [60, 60, 5, 5, 0.25]])["ap"] == pytest.approx(1.0)
    assert one_image(face, [0], [[0, 0, 10, 22, 0.75], [60, 60, 5, 5, 0.25]])["ap"] == 0.0


def test_a_duplicate_on_the_best_face_is_a_false_positive_even_if_another_face_is_free():
    # faces F0 0 0 10 10 and F1 2 0 10 10, both kept. Two dets on F0 exactly: the second's best face is F0 (IoU 1),
    # already found -> false positive, though F1 overlaps it by 99/143 = 0.69. Scores 0.75, 0.25 -> normalised 1, 0.
    # t < 1000: precision 1, recall 1/2; t = 1000: precision 1/2, recall 1/2 -> AP = 1/2 * 1 = 0.5
    # (taking the best *unused* face instead would recall F1: AP 1).
    faces = [[0, 0, 10, 10], [2, 0, 10, 10]]
    dets = np.array([[0, 0, 10, 10, 0.75], [0, 0, 10, 10, 0.25]])
    assert match_image(dets[:, :4], np.array(faces, float), np.array([True, True])).tolist() == [1, 0]
    assert one_image(faces, [0, 1], dets)["ap"] == pytest.approx(0.5)


def test_a_detection_whose_best_face_is_outside_the_setting_is_ignored():
    # faces K 0 0 10 10 (kept), U 2 0 10 10 (not kept), K2 100 100 10 10 (kept). dets: c on U (0.75, best face U
    # though K overlaps it by 0.69) -> ignored; e on K2 (0.5) -> recalls K2; d on nothing (0.25) -> false positive.
    # t < 500: nothing counted (precision NaN, recall 0); 500..999: precision 1, recall 1/2; t = 1000: 1/2, 1/2
    # -> AP 0.5 (matching c to K would give precision 1 at recall 1: AP 1).
    faces = [[0, 0, 10, 10], [2, 0, 10, 10], [100, 100, 10, 10]]
    dets = np.array([[2, 0, 10, 10, 0.75], [100, 100, 10, 10, 0.5], [50, 50, 10, 10, 0.25]])
    assert match_image(dets[:, :4], np.array(faces, float), np.array([True, False, True])).tolist() == [-1, 1, 0]
    assert one_image(faces, [0, 2], dets)["ap"] == pytest.approx(0.5)


def test_keep_lists_index_every_face_of_face_bbx_list(tmp_path):
    # face_bbx_list holds a zero-size face first; the keep list [2, 3] (1-based) is the two real faces. One det on
    # the third face (0.75), one on nothing (0.25): recall 1/2 at precision 1 -> AP 0.5. Indexing after dropping the
    # zero-size face would keep only the found face (and index past the end): AP 1.
    write_mats(tmp_path, {"0--E": {"a": [[5, 5, 0, 0], [10, 10, 10, 10], [40, 40, 10, 10]]}}, {"hard": {"a": [2, 3]}})
    gt = load_wider_mat_ground_truth(tmp_path)
    assert gt.faces[0].shape == (3, 4) and gt.keep["hard"][0].tolist() == [1, 2]
    r = wider_evaluate(gt, [np.array([[40, 40, 10, 10, 0.75], [200, 200, 9, 9, 0.25]])])
    assert r["hard"]["ap"] == pytest.approx(0.5) and r["hard"]["faces"] == 2


def test_setting_files_need_only_gt_list(tmp_path):
    write_mats(tmp_path, {"0--E": {"a": [[0, 0, 10, 10]]}, "1--F": {"b": [[0, 0, 9, 9], [20, 20, 9, 9]]}},
               {"hard": {"a": [1], "b": [1, 2]}, "easy": {"b": [2]}})
    gt = load_wider_mat_ground_truth(tmp_path)
    assert [k.tolist() for k in gt.keep["hard"]] == [[0], [0, 1]]
    assert [k.tolist() for k in gt.keep["easy"]] == [[], [1]]


def test_ground_truth_files_of_another_split_or_version_are_named(tmp_path):
    from scipy.io import loadmat, savemat

    write_mats(tmp_path, {"0--E": {"a": [[0, 0, 10, 10]], "b": [[0, 0, 5, 5]]}}, {"hard": {"a": [1]}})
    val = {k: v for k, v in loadmat(tmp_path / "wider_face_val.mat").items() if not k.startswith("__")}
    savemat(tmp_path / "wider_face_val.mat", {k: v for k, v in val.items() if k != "face_bbx_list"})
    with pytest.raises(FlowError, match=r"wider_face_val.mat: no 'face_bbx_list' variable \(it has event_list, file_list\)"):
        load_wider_mat_ground_truth(tmp_path)
    savemat(tmp_path / "wider_face_val.mat", val)
    savemat(tmp_path / "wider_easy_val.mat", {"face_bbx_list": val["face_bbx_list"]})
    with pytest.raises(FlowError, match=r"wider_easy_val.mat: no 'gt_list'"):
        load_wider_mat_ground_truth(tmp_path)
    savemat(tmp_path / "wider_easy_val.mat", {"gt_list": cell([cell([np.ones((1, 1))])])})  # 1 image, val has 2
    with pytest.raises(FlowError, match=r"wider_easy_val.mat: event 0--E has 1 keep lists, wider_face_val.mat has 2"):
        load_wider_mat_ground_truth(tmp_path)
    write_mats(tmp_path, {"0--E": {"a": [[0, 0, 10, 10]], "b": [[0, 0, 5, 5]]}}, {"hard": {"a": [1]}},
               setting_extra={"file_list": cell([cell(["a", "c"])])})
    with pytest.raises(FlowError, match=r"file_list names other images"):
        load_wider_mat_ground_truth(tmp_path)
    other = cell([cell([np.array([[0, 0, 10, 10.0]]), np.array([[1, 0, 5, 5.0]])])])
    write_mats(tmp_path, {"0--E": {"a": [[0, 0, 10, 10]], "b": [[0, 0, 5, 5]]}}, {"hard": {"a": [1]}},
               setting_extra={"face_bbx_list": other})
    with pytest.raises(FlowError, match=r"wider_easy_val.mat: its face_bbx_list differs"):
        load_wider_mat_ground_truth(tmp_path)


# ------------------------------------------------------------------------------- scores, sweep and AP formula
def test_scores_normalise_in_single_precision_from_the_true_min_and_max():
    # norm_score.m: single precision, so 0.3 becomes 0.30000001 and passes t = 700 (1 - 0.7 = 0.30000000000000004)
    s = normalised_scores([np.array([1.0, 0.3, 0.0]), np.zeros(0)])
    assert s[0][1] == float(np.float32(0.3)) and s[1].shape == (0,)
    # the min/max are the data's: scores 2..4 -> 0, 0.5, 1 (a max seeded 0 / min seeded 1, as in the Python port,
    # would turn them into 1/3, 2/3, 1)
    assert normalised_scores([np.array([4.0, 3.0, 2.0])])[0].tolist() == [1.0, 0.5, 0.0]
    # three faces found by dets scoring 1, 0.3, 0: at t = 700 two are recalled (a double-precision 0.3 would not be)
    r = one_image([[0, 0, 9, 9], [20, 0, 9, 9], [40, 0, 9, 9]], [0, 1, 2],
                  [[0, 0, 9, 9, 1.0], [20, 0, 9, 9, 0.3], [40, 0, 9, 9, 0.0]])
    assert r["recall"][698] == pytest.approx(1 / 3) and r["recall"][699] == pytest.approx(2 / 3)
    assert r["ap"] == pytest.approx(1.0)


def test_all_equal_scores_normalise_to_nothing_as_the_official_tool_does():
    # max == min: norm_score.m divides 0 by 0, no score passes any threshold, AP 0 even for a perfect detection
    assert one_image([[0, 0, 10, 10]], [0], [[0, 0, 10, 10, 0.9]])["ap"] == 0.0


def test_predictions_are_ranked_by_score_whatever_their_file_order():
    # read_pred.m sorts each image by descending score: the 0.75 det on the face recalls it, the 0.25 duplicate is a
    # false positive -> precision 1 at recall 1 -> AP 1 (taking the file order, the 0.25 det would find the face and
    # at every threshold below 1 both dets would count: AP 0.5)
    assert one_image([[0, 0, 10, 10]], [0], [[0, 0, 10, 10, 0.25], [0, 0, 10, 10, 0.75]])["ap"] == pytest.approx(1.0)


def test_voc_ap_appends_the_end_points_and_skips_nan_precision():
    # ranked TP, FP, TP over 2 faces: (r .5, p 1), (.5, .5), (1, 2/3) -> .5 * 1 + .5 * 2/3
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(5 / 6)
    # NaN precision (0/0) is skipped by the envelope, as MATLAB's max skips NaN: envelope 1 up to recall .5 -> AP .5
    # (np.maximum would carry the NaN left and give NaN). On real curves NaN sits only at recall 0, where it weighs 0.
    assert voc_ap(np.array([0.5, 0.5]), np.array([1.0, np.nan])) == pytest.approx(0.5)
    assert voc_ap(np.array([0.0, 0.0, 0.5, 0.5]), np.array([np.nan, np.nan, 1.0, 0.5])) == pytest.approx(0.5)


def test_coco_ap50_of_perfect_detections_is_one():
    d = np.array([[0, 0, 10, 10, 0.9], [20, 20, 30, 30, 0.8]])
    assert coco_ap50([(d, np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), np.zeros((0, 4)))]) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------- prediction files
def test_prediction_files_bad_lines_are_named():
    assert parse_prediction_text("a\n2\n1 2 3 4 0.5\n5,6,7,8,0.25 9\n\n", "p.txt").tolist() == [
        [1, 2, 3, 4, 0.5], [5, 6, 7, 8, 0.25]]
    assert parse_prediction_text("a\n0\n", "p.txt").shape == (0, 5)
    with pytest.raises(FlowError, match=r"p.txt:4: '5 6 7 0.5' is not `x y w h score`"):
        parse_prediction_text("a\n2\n1 2 3 4 0.5\n5 6 7 0.5\n", "p.txt")
    with pytest.raises(FlowError, match=r"p.txt:2: expected the number of boxes, got '1 2 3 4 0.5'"):
        parse_prediction_text("a\n1 2 3 4 0.5\n", "p.txt")
    with pytest.raises(FlowError, match=r"p.txt:4: the file ends after 1 of the 2 boxes"):
        parse_prediction_text("a\n2\n1 2 3 4 0.5\n", "p.txt")
    with pytest.raises(FlowError, match=r"p.txt:4: a box line after the 1 boxes"):
        parse_prediction_text("a\n1\n1 2 3 4 0.5\n1 2 3 4 0.5\n", "p.txt")
    with pytest.raises(FlowError, match=r"p.txt:3: .* \(five finite numbers\)"):
        parse_prediction_text("a\n1\n1 2 3 4 nan\n", "p.txt")


def test_missing_prediction_files_count_as_empty_and_other_splits_are_refused(tmp_path):
    write_preds(tmp_path / "p", {"0--E/a": [[0, 0, 10, 10, 0.5]]})
    (tmp_path / "p" / "b.txt").write_text("b\n0\n")  # the board notebook's flat layout
    ps = read_prediction_dir(tmp_path / "p", ["0--E/a", "0--E/b", "0--E/c"])
    assert ps.missing == ["0--E/c"] and ps.boxes[2] is None and ps.boxes[1].shape == (0, 5) and ps.flat == 1
    with pytest.raises(FlowError, match=r"none of its 2 prediction files .* predictions of another split"):
        read_prediction_dir(tmp_path / "p", ["9--X/z"])


def test_empty_or_unreadable_prediction_files_score_as_no_predictions_with_a_warning(tmp_path, capsys):
    """read_pred.m prints `Invalid format` for such a file and leaves its image without predictions; a malformed
    file with content is still refused with its line."""
    from flow.cli import main

    write_mats(tmp_path, {"0--E": {"a": [[40, 40, 10, 10]], "b": [[0, 0, 30, 30]], "c": [[60, 60, 20, 20]]}},
               {"hard": {"a": [1], "b": [1], "c": [1]}})
    pred = write_preds(tmp_path / "run", {"0--E/a": [[40, 40, 10, 10, 0.75], [200, 200, 9, 9, 0.25]],
                                          "0--E/c": [[60, 60, 20, 20, 0.5]]})
    (pred / "0--E" / "b.txt").write_bytes(b"")
    unreadable = pred / "0--E" / "c.txt"
    unreadable.unlink()
    unreadable.mkdir()  # a directory where the file should be: reading it fails (IsADirectoryError)
    ps = read_prediction_dir(pred, ["0--E/a", "0--E/b", "0--E/c"])
    assert ps.boxes[1] is None and ps.boxes[2] is None and ps.missing == []
    assert ps.unreadable[0].endswith("b.txt: empty (0 bytes)") and "c.txt: unreadable" in ps.unreadable[1]
    assert main(["eval", "--predictions", str(pred), "--mat-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "warning: 2 prediction files are empty or unreadable" in out and "b.txt: empty" in out
    r = json.loads((tmp_path / "o" / "eval.json").read_text())
    assert r["empty_or_unreadable_prediction_files"] == 2 and r["images_without_prediction_file"] == 0
    assert r["wider_hard_ap"] == pytest.approx(1 / 3)  # 1 of 3 faces found at precision 1, as with no files at all
    (pred / "0--E" / "b.txt").write_text("b\n1\n1 2 3\n")  # content, malformed: still refused with its line
    assert main(["eval", "--predictions", str(pred), "--mat-dir", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "b.txt:3: '1 2 3' is not `x y w h score`" in capsys.readouterr().err


def test_box_format_is_detected_only_when_unambiguous():
    faces = [np.array([[100 * k, 50, 20, 20]], float) for k in range(1, 6)]
    gt = GroundTruth([f"0--E/{k}" for k in range(5)], faces, {"hard": [np.array([0])] * 5})
    xywh = [np.array([[100 * k, 50, 20, 20, 0.9]]) for k in range(1, 6)]  # w < x: impossible as corners
    assert detect_box_format(xywh, gt, "p")[0] == "xywh"
    xyxy = [np.array([[100 * k, 50, 100 * k + 20, 70, 0.9]]) for k in range(1, 6)]  # reads both ways; 5 faces as xyxy
    fmt, why = detect_box_format(xyxy, gt, "p")
    assert fmt == "xyxy" and why.endswith("as xyxy 5")
    with pytest.raises(FlowError, match="pass --box-format"):  # one face only: too few to tell
        detect_box_format(xyxy[:1], GroundTruth(gt.names[:1], faces[:1], {"hard": [np.array([0])]}), "p")
    # corners with one flipped box: the geometry says x y w h, the 5 faces found say corners -> refuse
    flipped = [*xyxy[:4], np.array([[500, 50, 520, 70, 0.9], [30, 30, 20, 40, 0.1]])]
    with pytest.raises(FlowError, match=r"1 of 6 boxes would have x2 < x1 .* yet as xywh they find 0 faces at IoU 0.5, as xyxy 5"):
        detect_box_format(flipped, gt, "p")


def test_eval_predictions_cli_scores_any_detector_and_writes_the_report(tmp_path, capsys):
    from flow.cli import main

    # the keep-list case above, plus an image with a missing prediction file whose face counts as missed:
    # kept faces 3, recalled 1 at precision 1 (t < 1000), 1/2 at t = 1000 -> AP 1/3 in every setting
    write_mats(tmp_path, {"0--E": {"a": [[5, 5, 0, 0], [10, 10, 10, 10], [40, 40, 10, 10]], "b": [[0, 0, 30, 30]]}},
               {"hard": {"a": [2, 3], "b": [1]}})
    pred = write_preds(tmp_path / "run", {"0--E/a": [[40, 40, 10, 10, 0.75], [200, 200, 9, 9, 0.25]]}) / "0--E"
    pred = pred.parent  # run/ holds <event>/<image>.txt
    assert main(["eval", "--predictions", str(pred), "--mat-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "easy 0.3333   medium 0.3333   hard 0.3333" in out and "1 of 2 images have no prediction file" in out
    r = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert r["wider_hard_ap"] == pytest.approx(1 / 3) and r["hard_faces"] == 3 and r["box_format"] == "xywh"
    assert r["missing_prediction_files"] == ["0--E/b"] and len(r["pr_curves"]["easy"]["recall"]) == 1000
    assert (tmp_path / "out" / "pr_curves.png").stat().st_size > 0
    # rerun over our own report is fine; a user's eval.json is not replaced silently
    assert main(["eval", "--predictions", str(pred), "--mat-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    (tmp_path / "eval.json").write_text('{"mine": 1}')
    assert main(["eval", "--predictions", str(pred), "--mat-dir", str(tmp_path)]) == 1  # default out: beside run/
    assert "eval.json exists and was not written by flow eval" in capsys.readouterr().err
    assert json.loads((tmp_path / "eval.json").read_text()) == {"mine": 1}
    (pred / "0--E" / "a.txt").write_text("a\n2\n40 40 10 10 0.75\n200 200 9\n")
    assert main(["eval", "--predictions", str(pred), "--mat-dir", str(tmp_path), "--out", str(tmp_path / "o2")]) == 1
    assert "0--E/a.txt:4: '200 200 9' is not `x y w h score`" in capsys.readouterr().err


def test_eval_run_scores_the_prediction_txts_it_writes(tmp_path):
    """`flow eval --run`'s numbers are those of its own prediction txts scored as anyone's predictions, and the same
    faces given as annotation txt or as .mat files give the same AP."""
    import torch

    from flow.train.builtin import synth_dataset
    from flow.train.evaluate import evaluate_model
    from flow.train.wider import load_split, read_image
    from models.lpyolo import DEFAULT_ANCHORS

    root = synth_dataset(tmp_path / "data", n_train=1, n_val=6, size=96)
    samples = load_split(root, "val")
    img, grid = 96, 3

    class Oracle(torch.nn.Module):
        """A stand-in network whose output codes put one box on each valid face (objectness 1, .85, .7, .55 in turn;
        faces too large for an anchor come out distorted) and one box on none, images in the order evaluate_model
        feeds them."""

        def __init__(self):
            super().__init__()
            self.outputs, self.seen = [], 0
            for s in samples:
                h, w = read_image(s.path).shape[:2]
                ratio = min(img / h, img / w)
                px, py = (img - round(w * ratio)) // 2, (img - round(h * ratio)) // 2
                v = np.full((3, 6, grid, grid), -1.0)  # objectness -1: probability 0, no box
                for k, (x, y, bw, bh) in enumerate(s.boxes):
                    cx, cy = (x + bw / 2) * ratio + px, (y + bh / 2) * ratio + py
                    gx, gy, a = min(int(cx // 32), grid - 1), min(int(cy // 32), grid - 1), k % 3
                    v[a, :, gy, gx] = [cx / 32 - gx - 0.5, cy / 32 - gy - 0.5, np.sqrt(bw * ratio / DEFAULT_ANCHORS[a][0]) - 1,
                                       np.sqrt(bh * ratio / DEFAULT_ANCHORS[a][1]) - 1, 1 - 0.3 * (k % 4), 1]
                free = np.argwhere(v[2, 4] == -1)  # and a false positive in an empty cell, ranked above most faces
                if len(free):
                    v[2, :, free[0][0], free[0][1]] = [0, 0, 0, 0, 0.8, 1]
                self.outputs.append(np.clip(v, -1, 1).reshape(18, grid, grid))

        def output_scale(self):
            return 1 / 127

        def forward(self, x):
            out = torch.from_numpy(np.stack(self.outputs[self.seen : self.seen + len(x)])).float()
            self.seen += len(x)
            return out

    # the same faces as .mat ground truth: every face listed, the valid ones kept in all three settings
    events: dict = {}
    keeps: dict = {"hard": {}}
    for s in samples:
        events.setdefault(s.path.parent.name, {})[s.path.stem] = np.concatenate([s.boxes, s.ignore]).reshape(-1, 4)
        keeps["hard"][s.path.stem] = list(range(1, len(s.boxes) + 1))
    write_mats(tmp_path, events, keeps)
    spec = SimpleNamespace(img=img, anchors=DEFAULT_ANCHORS, num_classes=1, resample="bilinear")
    write_preds(tmp_path / "pred", {"0--Synth_val/val_09999": [[0, 0, 10, 10, 0.9]]})  # left by an earlier run
    r = evaluate_model(Oracle(), spec, root, "val", mat_dir=tmp_path, predictions_dir=tmp_path / "pred")
    assert r["stale_prediction_files_removed"] == 1 and not (tmp_path / "pred" / "0--Synth_val" / "val_09999.txt").exists()
    again = evaluate_prediction_dir(tmp_path / "pred", tmp_path, root, "val", "xywh")
    assert 0 < r["all_faces_ap"] < 1 and r["all_faces_ap"] == again["all_faces_ap"] and r["coco_ap50"] == again["coco_ap50"]
    assert r["wider_hard_ap"] == again["wider_hard_ap"] == r["all_faces_ap"] and r["ap50"] == r["all_faces_ap"]
    assert r["all_faces_faces"] == again["all_faces_faces"] > 0 and r["prediction_boxes"] == again["prediction_boxes"] > 0


def test_evaluation_feeds_the_network_the_fabric_letterboxs_pixels(tmp_path):
    """A "bilinear-exact" model is evaluated on letterbox_fixed's canvases of the decoded pictures, pixel for pixel
    (the canvases training sees and the fabric computes)."""
    import torch

    from board.preprocess import letterbox_fixed
    from flow.train.builtin import synth_dataset
    from flow.train.evaluate import evaluate_model
    from flow.train.wider import load_split, read_image
    from models.lpyolo import DEFAULT_ANCHORS

    root = synth_dataset(tmp_path / "data", n_train=1, n_val=3, size=96)
    seen = []

    class Recorder(torch.nn.Module):
        def output_scale(self):
            return 1 / 127

        def forward(self, x):
            seen.extend(x.numpy())
            return torch.full((len(x), 18, 2, 2), -1.0)

    spec = SimpleNamespace(img=64, anchors=DEFAULT_ANCHORS, num_classes=1, resample="bilinear-exact")
    evaluate_model(Recorder(), spec, root, "val")
    want = [letterbox_fixed(read_image(s.path), 64).transpose(2, 0, 1) for s in load_split(root, "val")]
    assert len(seen) == len(want) == 3
    for got, w in zip(seen, want, strict=True):
        np.testing.assert_array_equal(got, w.astype(np.float32))
