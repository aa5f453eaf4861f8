"""`flow deploy` checks the manifest's output bits and sign against what FINN's last node streams."""

from __future__ import annotations

import shutil

import onnx
import pytest
from onnx import TensorProto, helper

from board.manifest import load_manifest
from flow.deploy import make_deploy
from flow.errors import FlowError
from flow.hw.build_dir import intermediate_model
from flow.provenance import record


def fake_build(run, datatype: str, folded=(1, 2, 2, 6, 3)) -> None:
    """A finished build as deploy reads it: build_done.json recorded from the run's model and manifest, and the
    folded model whose first and last node FINN's zynq-iodma shell streams through (here one FIFO)."""
    models = run / "finn" / "intermediate_models"
    models.mkdir(parents=True)
    normal = [1, 2, 2, 18]
    node = helper.make_node("StreamingFIFO_rtl", ["in0"], ["out0"], name="StreamingFIFO_rtl_0",
                            domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow", dataType=datatype,
                            depth=32, folded_shape=list(folded), normal_shape=normal, ram_style="auto")
    graph = helper.make_graph([node], "fifo", [helper.make_tensor_value_info("in0", TensorProto.FLOAT, normal)],
                              [helper.make_tensor_value_info("out0", TensorProto.FLOAT, normal)])
    onnx.save(helper.make_model(graph), str(intermediate_model(run / "finn", "fifo_depths")))
    (run / "finn" / "report").mkdir()
    (run / "finn" / "report" / "estimate.json").write_text('{"fits": true}')  # deploy packages only a build that fits
    done = run / "finn" / "build_done.json"
    done.write_text("{}")
    record(done, [run / "model.qonnx.onnx", run / "manifest.json"], "python -m flow estimate")


def test_deploy_takes_the_folds_of_a_build_that_streams_the_manifests_datatype(run_4w4a, tmp_path):
    run = shutil.copytree(run_4w4a, tmp_path / "run")
    shutil.rmtree(run / "deploy", ignore_errors=True)
    fake_build(run, "INT8")
    make_deploy(run, tmp_path / "pkg")
    m = load_manifest(tmp_path / "pkg")
    assert (m.packing.input_word_elems, m.packing.output_word_elems) == (3, 3) and m.geometry.out_fold == 3


@pytest.mark.parametrize("datatype", ["INT4", "UINT8"])
def test_deploy_refuses_a_build_whose_output_is_not_the_manifests(run_4w4a, tmp_path, datatype):
    run = shutil.copytree(run_4w4a, tmp_path / "run")
    fake_build(run, datatype)
    with pytest.raises(FlowError, match=rf"manifest.json: output.datatype INT8 \(8 bits, signed\), but FINN's last "
                                        rf"node StreamingFIFO_rtl_0 in .*_fifo_depths.onnx streams {datatype}"):
        make_deploy(run, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()  # refused before anything was written
