"""The segmentation network factory: any size in, logits of the same size out; clear errors."""

from __future__ import annotations

import pytest
import torch

from tests.models.segmenters_for_tests import random_images
from uaafusion.errors import ConfigError
from uaafusion.models import create_segmenter
from uaafusion.models.segmentation import PaddedSegmenter

SMALL_UNET = {"arch": "Unet", "encoder": "mobilenet_v2", "encoder_depth": 3, "decoder_channels": (16, 8, 8)}


@pytest.mark.parametrize(("num_classes", "batch"), [(2, 1), (20, 3)])
def test_default_deeplab_keeps_odd_sizes(num_classes, batch):
    segmenter = create_segmenter(num_classes=num_classes).eval()
    assert isinstance(segmenter, PaddedSegmenter)
    assert segmenter.spec["arch"] == "DeepLabV3Plus" and segmenter.pad_multiple == 32
    with torch.no_grad():
        logits = segmenter(random_images(batch, 37, 53))
    assert logits.shape == (batch, num_classes, 37, 53)
    assert torch.isfinite(logits).all()


def test_cropped_logits_match_the_unpadded_model_on_aligned_sizes():
    segmenter = create_segmenter(num_classes=3, **SMALL_UNET).eval()
    image = random_images(2, 16, 24)
    with torch.no_grad():
        assert torch.equal(segmenter(image), segmenter.model(image))
        # A tiny image (shorter than the padding) uses replicate padding and still works.
        assert segmenter(random_images(1, 3, 5)).shape == (1, 3, 3, 5)


def test_batch_of_one_trains_with_deeplab_aspp_pooling():
    segmenter = create_segmenter(num_classes=3).train()
    logits = segmenter(random_images(1, 33, 40))
    logits.mean().backward()
    assert logits.shape == (1, 3, 33, 40)
    assert segmenter.training and all(m.training for m in segmenter.modules())
    # Larger batches still use batch statistics (the running mean moves).
    norm = next(m for m in segmenter.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = norm.running_mean.clone()
    segmenter(random_images(2, 32, 32))
    assert not torch.equal(before, norm.running_mean)


def test_unknown_names_list_allowed_ones():
    with pytest.raises(ConfigError, match="allowed: .*DeepLabV3Plus"):
        create_segmenter("DeepLabV9", "mobilenet_v2", num_classes=3)
    with pytest.raises(ConfigError, match="allowed include: mobilenet_v2"):
        create_segmenter("Unet", "mobilenet_v9", num_classes=3)


def test_named_weights_go_to_smp_and_a_failed_download_is_named(monkeypatch):
    """``imagenet`` is segmentation-models-pytorch's own download (never exercised here): the name is
    passed on, unknown names are refused before any download, a failed download says what to do."""
    import urllib.error

    import segmentation_models_pytorch as smp

    with pytest.raises(ConfigError, match="encoder_weights 'no-such-weights' cannot be built"):
        create_segmenter(num_classes=3, encoder_weights="no-such-weights")
    asked = []

    def offline(*args, **kwargs):
        asked.append(kwargs["encoder_weights"])
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(smp, "create_model", offline)
    with pytest.raises(ConfigError, match="could not download them .*give that PATH"):
        create_segmenter(num_classes=3, encoder_weights="imagenet")
    assert asked == ["imagenet"]


def test_local_weight_files_load(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        create_segmenter(num_classes=3, encoder_weights=str(tmp_path / "missing.pth"))
    source = create_segmenter(num_classes=3, **SMALL_UNET)
    weights_file = tmp_path / "encoder.pth"
    torch.save(source.model.encoder.state_dict(), weights_file)
    loaded = create_segmenter(num_classes=5, encoder_weights=str(weights_file), **SMALL_UNET)
    for key, value in source.model.encoder.state_dict().items():
        assert torch.equal(loaded.model.encoder.state_dict()[key], value), key
    # RGB encoder weights (3 input channels) are summed into the gray first convolution.
    import segmentation_models_pytorch as smp

    rgb = smp.create_model("Unet", "mobilenet_v2", encoder_weights=None, in_channels=3, classes=1,
                           encoder_depth=3, decoder_channels=(16, 8, 8))
    rgb_file = tmp_path / "rgb.pth"
    torch.save({"encoder." + k: v for k, v in rgb.encoder.state_dict().items()}, rgb_file)
    gray = create_segmenter(num_classes=3, encoder_weights=rgb_file, **SMALL_UNET)
    first_key = next(k for k, v in gray.model.encoder.state_dict().items() if v.dim() == 4)
    torch.testing.assert_close(gray.model.encoder.state_dict()[first_key],
                               rgb.encoder.state_dict()[first_key].sum(dim=1, keepdim=True))
    wrong = tmp_path / "wrong.pth"
    torch.save({"nothing": torch.zeros(2)}, wrong)
    with pytest.raises(ConfigError, match="does not fit"):
        create_segmenter(num_classes=3, encoder_weights=wrong, **SMALL_UNET)


def test_architecture_that_changes_resolution_is_reported():
    segmenter = create_segmenter("FPN", "mobilenet_v2", num_classes=2, encoder_depth=3).eval()
    with pytest.raises(ConfigError, match="does not keep the resolution"), torch.no_grad():
        segmenter(random_images(1, 32, 32))
