"""Vision Transformers: Grad-CAM through tokens, CLS attention, attention rollout, patch grid.

Small torchvision ``VisionTransformer``s with random weights (the classification head, which
torchvision initialises to zero, is re-drawn so that gradients are not all zero). A
subclass with its own positional embedding takes non-square inputs.
"""

from __future__ import annotations

import cv2
import pytest
import torch
from torch import nn
from torchvision.models import VisionTransformer, vit_b_16

from gradcam_kit.explainers.cnn import explain
from gradcam_kit.explainers.vit import (
    AttentionRecorder,
    TokensToGrid,
    attention_rollout,
    capture_attention,
    cls_attention_map,
    default_vit_layer,
    patch_grid_figure,
    patch_grid_size,
    rollout_matrix,
    vit_gradcam,
    write_vit_figures,
)

PATCH = 8
SMALL = {"num_layers": 2, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64, "num_classes": 5}
NO_HOOKS = {"forward": 0, "forward_pre": 0, "backward": 0}


class RectangularViT(VisionTransformer):
    """torchvision's ViT with a positional embedding for a ``height x width`` input."""

    def __init__(self, height: int, width: int, **kwargs: int) -> None:
        super().__init__(image_size=height, patch_size=PATCH, **kwargs)
        self.seq_length = (height // PATCH) * (width // PATCH) + 1
        self.encoder.pos_embedding = nn.Parameter(
            torch.empty(1, self.seq_length, self.hidden_dim).normal_(std=0.02)
        )

    def _process_input(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x)
        return x.flatten(2).permute(0, 2, 1)


def _prepare(model: VisionTransformer) -> VisionTransformer:
    nn.init.normal_(model.heads.head.weight, std=0.5, generator=torch.Generator().manual_seed(1))
    return model.eval()


def build_vit(height: int = 32, width: int = 32) -> VisionTransformer:
    torch.manual_seed(0)
    if height == width:
        return _prepare(VisionTransformer(image_size=height, patch_size=PATCH, **SMALL))
    return _prepare(RectangularViT(height, width, **SMALL))


def _inputs(height: int, width: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize(("height", "width"), [(32, 32), (32, 48), (48, 24)])
def test_gradcam_shapes_for_any_size_divisible_by_the_patch(height, width, hook_counts):
    model = build_vit(height, width)
    x = _inputs(height, width)
    grid = (height // PATCH, width // PATCH)
    assert patch_grid_size(model, x) == grid
    layer = default_vit_layer(model)
    assert layer == "encoder.layers.encoder_layer_1.ln_1"
    out = vit_gradcam(model, x, [0, 3])
    heatmap = out.heatmaps[layer]
    assert heatmap.shape == (2, height, width)
    assert torch.isfinite(heatmap).all() and float(heatmap.amax()) == pytest.approx(1.0)
    raw = vit_gradcam(model, x, [0, 3], output_size=None, normalize=False).heatmaps[layer]
    assert raw.shape == (2, *grid) and float(raw.amin()) >= 0
    # the generic entry point dispatches a ViT to the same computation
    torch.testing.assert_close(explain(model, x, class_idx=[0, 3]).heatmaps[layer], heatmap)
    assert hook_counts(model) == NO_HOOKS
    for method in ("layercam", "gradcam++"):
        assert vit_gradcam(model, x, method=method).heatmaps[layer].shape == (2, height, width)
    assert cls_attention_map(model, x).heatmaps[
        "encoder.layers.encoder_layer_1.self_attention"
    ].shape == (2, height, width)
    assert attention_rollout(model, x, output_size=None).heatmaps["rollout"].shape == (2, *grid)


def test_tokens_to_grid_drops_cls_and_keeps_row_major_order():
    tokens = torch.arange(1 + 2 * 3, dtype=torch.float32).view(1, 7, 1).expand(1, 7, 4)
    grid = TokensToGrid((2, 3))(tokens)
    assert grid.shape == (1, 4, 2, 3)
    assert grid[0, 0].tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    with pytest.raises(ValueError, match=r"\(B, 7, D\) for a 2x3 patch grid"):
        TokensToGrid((2, 3))(torch.zeros(1, 10, 4))


def test_gradcam_matches_pytorch_grad_cam_with_its_reshape():
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x = build_vit(), _inputs(32, 32)

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 1:].reshape(tokens.shape[0], 4, 4, tokens.shape[2]).permute(0, 3, 1, 2)

    for name, reference in [("gradcam", "GradCAM"), ("layercam", "LayerCAM")]:
        layer = model.encoder.layers[-1].ln_1
        with getattr(pytorch_grad_cam, reference)(model, [layer], reshape_transform=reshape) as cam:
            expected = torch.from_numpy(cam(x, [ClassifierOutputTarget(c) for c in (1, 4)]))
        model.zero_grad(set_to_none=True)
        ours = vit_gradcam(model, x, [1, 4], method=name).heatmaps[default_vit_layer(model)]
        torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


def test_capturing_attention_does_not_change_outputs(hook_counts):
    model, x = build_vit(32, 48), _inputs(32, 48)
    with torch.no_grad():
        plain = model(x)
    with torch.no_grad(), AttentionRecorder(model) as recorder:
        captured = model(x)
    assert torch.equal(plain, captured)
    # With autograd on, torch may take another attention kernel: compare like with like.
    plain_with_grad = model(x)
    with_grad, weights = capture_attention(model, x)
    assert with_grad.requires_grad and torch.equal(with_grad, plain_with_grad)
    assert torch.equal(cls_attention_map(model, x).logits, plain_with_grad)
    assert torch.equal(attention_rollout(model, x).logits, plain_with_grad)
    assert list(weights) == [
        "encoder.layers.encoder_layer_0.self_attention",
        "encoder.layers.encoder_layer_1.self_attention",
    ]
    tokens = 1 + 4 * 6
    for attention in weights.values():
        assert attention.shape == (2, 2, tokens, tokens)
        torch.testing.assert_close(attention.sum(-1), torch.ones(2, 2, tokens))
    assert recorder.weights.keys() == weights.keys()
    assert hook_counts(model) == NO_HOOKS


def test_captured_weights_are_the_attention_the_block_used():
    model, x = build_vit(), _inputs(32, 32)
    block = model.encoder.layers[0]
    normed = {}
    handle = block.ln_1.register_forward_hook(lambda m, i, o: normed.setdefault("x", o))
    try:
        _, weights = capture_attention(model, x, ["encoder.layers.encoder_layer_0.self_attention"])
    finally:
        handle.remove()
    with torch.no_grad():
        _, expected = block.self_attention(
            normed["x"], normed["x"], normed["x"], need_weights=True, average_attn_weights=False
        )
    torch.testing.assert_close(weights["encoder.layers.encoder_layer_0.self_attention"], expected)


def test_cls_attention_is_the_head_averaged_cls_row():
    model, x = build_vit(32, 48), _inputs(32, 48)
    _, weights = capture_attention(model, x)
    last = weights["encoder.layers.encoder_layer_1.self_attention"]
    expected = last.mean(1)[:, 0, 1:].reshape(2, 4, 6)
    out = cls_attention_map(model, x, output_size=None, normalize=False)
    (heatmap,) = out.heatmaps.values()
    torch.testing.assert_close(heatmap, expected)
    assert out.class_idx is None
    first = cls_attention_map(
        model, x, layer="encoder.layers.encoder_layer_0.self_attention", output_size=None
    ).heatmaps["encoder.layers.encoder_layer_0.self_attention"]
    assert first.shape == (2, 4, 6) and not torch.allclose(first, heatmap)


def test_rollout_adds_identity_renormalises_rows_and_multiplies_blocks():
    generator = torch.Generator().manual_seed(3)
    first = torch.softmax(torch.randn(2, 3, 5, 5, generator=generator), dim=-1)
    second = torch.softmax(torch.randn(2, 3, 5, 5, generator=generator), dim=-1)
    identity = torch.eye(5)
    one = rollout_matrix([first])
    torch.testing.assert_close(one, 0.5 * (first.mean(1) + identity))
    two = rollout_matrix([first, second])
    torch.testing.assert_close(two, (0.5 * (second.mean(1) + identity)) @ one)
    torch.testing.assert_close(two.sum(-1), torch.ones(2, 5))
    assert float(two.amin()) >= 0
    maxed = rollout_matrix([first], head_fusion="max")
    expected = first.amax(1) + identity
    torch.testing.assert_close(maxed, expected / expected.sum(-1, keepdim=True))
    with pytest.raises(ValueError, match="head_fusion must be one of"):
        rollout_matrix([first], head_fusion="median")
    with pytest.raises(ValueError, match="at least one block"):
        rollout_matrix([])


def test_attention_rollout_map_is_the_cls_row_of_the_rollout():
    model, x = build_vit(48, 24), _inputs(48, 24)
    _, weights = capture_attention(model, x)
    rollout = rollout_matrix(list(weights.values()))
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2, rollout.shape[1]))
    out = attention_rollout(model, x, output_size=None, normalize=False)
    torch.testing.assert_close(out.heatmaps["rollout"], rollout[:, 0, 1:].reshape(2, 6, 3))
    with pytest.raises(ValueError, match="head_fusion must be one of"):
        attention_rollout(model, x, head_fusion="sum")


def test_hooks_are_removed_after_exceptions(hook_counts):
    model = build_vit()
    wrong = _inputs(40, 40)  # divisible by the patch, but not the model's image size
    with pytest.raises(AssertionError, match="Wrong image height"):
        cls_attention_map(model, wrong)
    assert hook_counts(model) == NO_HOOKS
    with pytest.raises(AssertionError, match="Wrong image height"):
        attention_rollout(model, wrong)
    assert hook_counts(model) == NO_HOOKS
    with pytest.raises(AssertionError, match="Wrong image height"):
        vit_gradcam(model, wrong)
    assert hook_counts(model) == NO_HOOKS
    with pytest.raises(RuntimeError, match="boom"):
        with AttentionRecorder(model):
            assert hook_counts(model)["forward"] == 2
            raise RuntimeError("boom")
    assert hook_counts(model) == NO_HOOKS


def test_bad_inputs_are_rejected():
    model = build_vit()
    with pytest.raises(ValueError, match="not divisible by the patch size 8"):
        vit_gradcam(model, _inputs(30, 32))
    with pytest.raises(ValueError, match="not nn.MultiheadAttention"):
        AttentionRecorder(model, "encoder.layers.encoder_layer_0.ln_1")
    with pytest.raises(ValueError, match="did you mean"):
        AttentionRecorder(model, "encoder.layers.encoder_layer_0.self_atention")
    with pytest.raises(ValueError, match="no integer `patch_size`"):
        patch_grid_size(nn.Conv2d(3, 3, 1), _inputs(32, 32))


def test_train_mode_and_grads_untouched():
    model, x = build_vit(), _inputs(32, 32)
    model.train()
    flags = {name: m.training for name, m in model.named_modules()}
    vit_gradcam(model, x)
    attention_rollout(model, x)
    assert {name: m.training for name, m in model.named_modules()} == flags
    assert all(p.grad is None for p in model.parameters())


def test_patch_grid_figure_colours_patches_and_draws_the_grid(tmp_path):
    image = torch.full((16, 24, 3), 128, dtype=torch.uint8)
    scores = torch.tensor([[0.0, 0.2, 0.4], [0.6, 0.8, 1.0]])
    path = tmp_path / "grid.png"
    figure = patch_grid_figure(image, scores, PATCH, alpha=1.0, path=path)
    assert figure.shape == (16, 24, 3) and figure.dtype.name == "uint8"
    white = [255, 255, 255]
    assert figure[0, 5].tolist() == white and figure[8, 5].tolist() == white  # row lines
    assert figure[5, 0].tolist() == white and figure[5, 16].tolist() == white  # column lines
    assert figure[15, 5].tolist() == white and figure[5, 23].tolist() == white  # closing edges
    hot, cold = figure[12, 20], figure[4, 4]  # patch interiors: score 1 and score 0
    assert hot.tolist() == [128, 0, 0]  # jet: high = (dark) red
    assert cold.tolist() == [0, 0, 128]  # low = (dark) blue
    assert (figure[12, 12] == figure[10, 10]).all()  # one colour per patch
    written = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert (written == figure).all()
    with pytest.raises(ValueError, match="resize the image to the model input"):
        patch_grid_figure(image[:15], scores, PATCH)


def test_write_vit_figures(tmp_path):
    model, x = build_vit(32, 48), _inputs(32, 48)
    paths = write_vit_figures(model, x, tmp_path / "viz")
    assert set(paths) == {"gradcam_overlay", "patch_attention_overlay", "patch_grid"}
    for path in paths.values():
        assert cv2.imread(str(path)).shape == (32, 48, 3)


def test_torchvision_vit_b_16_at_64_pixels():
    torch.manual_seed(0)
    model = _prepare(vit_b_16(weights=None, image_size=64, num_classes=3))
    x = _inputs(64, 64, batch=1)
    out = vit_gradcam(model, x, 2)
    assert out.heatmaps["encoder.layers.encoder_layer_11.ln_1"].shape == (1, 64, 64)
    rollout = attention_rollout(model, x, output_size=None).heatmaps["rollout"]
    assert rollout.shape == (1, 4, 4) and torch.isfinite(rollout).all()
    assert torch.equal(attention_rollout(model, x).logits, model(x))
