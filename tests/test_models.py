import pytest
import torch

from models import LAYERS, PRESETS, SpecError, build_model, parse_overrides, spec_for


def test_presets_follow_lpyolo_bit_layout():
    for name, spec in PRESETS.items():
        spec.validate()
        if name != "float":
            assert spec.weight_bits[0] == 8 and spec.weight_bits[-1] == 8, name  # first/last layers 8-bit
    assert PRESETS["4w4a"].weight_bits[1:-1] == (4,) * 8 and PRESETS["4w4a"].act_bits == (4,) * 9
    assert PRESETS["8w3a"].act_bits == (3,) * 9 and PRESETS["float"].is_float


def test_lpyolo_shape_and_size_at_416():
    model = build_model(spec_for("4w4a", img=416))
    assert model.macs() == 153_557_456  # FACTS: ~153.6 M MAC per frame
    weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight") and p.dim() == 4)
    assert weights == 350_696  # FACTS: ~350.7 k weights


@pytest.mark.parametrize("img", [64, 96])
def test_output_grid_follows_input_size(img):
    model = build_model(spec_for("2w4a", img=img)).eval()
    out = model(torch.rand(2, 3, img, img) * 255)
    assert out.shape == (2, 18, img // 32, img // 32)
    assert out.abs().max() <= 1.0  # HardTanh range


def test_overrides_change_only_the_named_layers():
    spec = spec_for("4w4a", img=64, overrides="conv3.w=2,conv5.a=3")
    assert spec.weight_bits[3] == 2 and spec.act_bits[5] == 3
    assert spec.weight_bits[2] == 4 and spec.act_bits[4] == 4
    assert "conv3.w=2" in spec.name
    assert parse_overrides(["conv1.w=f"]) == {("conv1", "w"): None}


@pytest.mark.parametrize("bad, needle", [
    ("conv3.w=0", "conv3 weight bits = 0"),
    ("conv3.w=1", "use an integer >= 2"),
    ("conv12.w=4", "no layer conv12"),
    ("conv3.x=4", "bad override"),
    ("conv9.a=4", "fixed HardTanh output"),
])
def test_impossible_specs_are_refused_clearly(bad, needle):
    with pytest.raises(SpecError, match=needle):
        spec_for("4w4a", img=64, overrides=bad)


def test_size_and_finn_limits():
    with pytest.raises(SpecError, match="not a positive multiple of 32"):
        spec_for("4w4a", img=100)
    with pytest.raises(SpecError, match="unknown variant"):
        spec_for("5w5a")
    with pytest.raises(SpecError, match="over 8 bits"):
        spec_for("4w4a", img=64, overrides="conv4.a=12").validate(for_finn=True)
    with pytest.raises(SpecError, match="float layers cannot become hardware"):
        spec_for("float", img=64).validate(for_finn=True)
    assert len(LAYERS) == 10


def test_resample_is_part_of_the_spec():
    """The resample travels with the model (checkpoint, manifest); a spec written before it existed reads as bilinear."""
    from models.lpyolo import QuantSpec

    spec = spec_for("4w4a", img=64, resample="nearest")
    assert spec.resample == "nearest" and "nearest resample" in spec.describe()
    assert QuantSpec.from_json(spec.to_json()) == spec
    old = spec_for("4w4a", img=64).to_json()
    del old["resample"]
    assert QuantSpec.from_json(old).resample == "bilinear"
    with pytest.raises(SpecError, match="resample 'area'; use one of: bilinear, nearest"):
        spec_for("4w4a", img=64, resample="area")
