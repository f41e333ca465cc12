"""VideoMAE model: HF parity, token selection invariants, packed variable length, checkpoints,
MAE pre-training. Tiny configs only (32x32 frames, 4 frames: 2 x 2 x 2 = 8 tokens)."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch

from pipeline.checkpoints import hf_to_official_state_dict, load_videomae_checkpoint
from pipeline.model import (
    Packing,
    VideoMAEEncoder,
    build_model,
    build_pretrain_model,
    masked_ids,
    patchify_target,
    sincos_table,
    token_counts,
)
from pipeline.packing import drop_path_packed
from pipeline.selection import gather_tokens

FRAMES, SIZE, PATCH, TUBELET = 4, 32, 16, 2
N = (FRAMES // TUBELET) * (SIZE // PATCH) ** 2  # 8 tokens


def clip(batch: int = 3, frames: int = FRAMES, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """x: [B, 3, T, H, W], roughly ImageNet-normalised noise."""
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def tiny(num_classes: int = 5, **kwargs) -> torch.nn.Module:
    # head_init_scale=1: official 0.001 makes logits ~1e-3 and every tolerance meaningless.
    kwargs.setdefault("head_init_scale", 1.0)
    torch.manual_seed(0)
    return build_model("tiny", num_classes, num_frames=FRAMES, img_size=SIZE, **kwargs).eval()


def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter O(0.1) random values so parity checks exercise all weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = 0.1 * torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + noise if "norm" in name and name.endswith("weight") else noise)


# ------------------------------------------------------------------------------------------
# Hugging Face parity


def hf_config(**overrides):
    transformers = pytest.importorskip("transformers")
    kwargs = dict(
        image_size=SIZE, patch_size=PATCH, num_frames=FRAMES, tubelet_size=TUBELET,
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
        num_labels=5, layer_norm_eps=1e-6, use_mean_pooling=True, attn_implementation="eager",
        decoder_hidden_size=32, decoder_num_hidden_layers=2, decoder_num_attention_heads=2,
        decoder_intermediate_size=128,
    )
    kwargs.update(overrides)
    return transformers, transformers.VideoMAEConfig(**kwargs)


def ours_like_hf(cls_kwargs: dict, pretrain: bool = False):
    from pipeline.model import VideoMAEClassifier, VideoMAEPretrain

    common = dict(embed_dim=64, depth=2, num_heads=4, num_frames=FRAMES, img_size=SIZE,
                  patch_size=PATCH, tubelet_size=TUBELET)
    if pretrain:
        return VideoMAEPretrain(decoder_dim=32, decoder_heads=2, decoder_depth=2, **common)
    return VideoMAEClassifier(num_classes=5, **common, **cls_kwargs)


@pytest.mark.parametrize("fused", [True, False])
def test_logits_match_hugging_face_classifier(fused):
    transformers, config = hf_config()
    torch.manual_seed(0)
    hf = transformers.VideoMAEForVideoClassification(config).eval()
    randomize_(hf)
    # HF builds fc_norm with LayerNorm's default eps 1e-5; the official model (and ours) uses
    # 1e-6. Weights trained by the official code expect 1e-6, so the reference gets it too.
    hf.fc_norm.eps = 1e-6
    ours = ours_like_hf({}).eval()
    ours.set_fused_attn(fused)
    report = load_videomae_checkpoint(ours, hf_to_official_state_dict(hf.state_dict()))
    assert report.missing == () and report.unexpected == () and report.dropped == ()
    x = clip(2)
    with torch.no_grad():
        expected = hf(pixel_values=x.transpose(1, 2)).logits  # HF takes [B, T, C, H, W]
        got = ours(x)
    assert expected.abs().max() > 0.1  # logits are not trivially small
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_loss_and_predictions_match_hugging_face_pretraining():
    transformers, config = hf_config(use_mean_pooling=False, norm_pix_loss=True)
    torch.manual_seed(0)
    hf = transformers.VideoMAEForPreTraining(config).eval()
    randomize_(hf)
    ours = ours_like_hf({}, pretrain=True).eval()
    state = hf_to_official_state_dict(hf.state_dict())
    report = load_videomae_checkpoint(ours, state, strict=True)
    assert report.missing == () and report.unexpected == ()
    x = clip(2)
    hidden = torch.zeros(2, N, dtype=torch.bool)
    hidden[0, [1, 2, 5, 6, 7]] = True
    hidden[1, [0, 3, 4, 6, 7]] = True
    ids_visible = torch.stack([(~row).nonzero().squeeze(1) for row in hidden])
    with torch.no_grad():
        expected = hf(pixel_values=x.transpose(1, 2), bool_masked_pos=hidden)
        loss, pred, ids_masked = ours(x, ids_visible)
    assert torch.equal(ids_masked, torch.stack([row.nonzero().squeeze(1) for row in hidden]))
    torch.testing.assert_close(pred, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(loss, expected.loss, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------
# Position table, init, layout


def test_sincos_table_is_the_official_interleaved_table():
    n, d = 10, 12
    angles = np.array([[p / np.power(10000, 2 * (j // 2) / d) for j in range(d)] for p in range(n)])
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    assert torch.equal(sincos_table(n, d), torch.FloatTensor(angles))
    assert torch.equal(sincos_table(3 * n, d)[:n], sincos_table(n, d))


def test_state_dict_has_official_keys_and_no_position_table():
    keys = set(tiny().state_dict())
    assert {"patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.0.attn.q_bias",
            "blocks.0.attn.v_bias", "blocks.3.mlp.fc2.bias", "fc_norm.weight", "head.bias"} <= keys
    assert not any("pos_embed" in k or "qkv.bias" in k or k.startswith("norm.") for k in keys)


def test_head_init_scale_and_zero_qv_bias():
    model = build_model("tiny", 7, num_frames=FRAMES, img_size=SIZE)  # official init_scale
    # trunc_normal(std .02) times init_scale 1e-3
    assert 1e-5 < model.head.weight.std() < 3e-5
    assert model.blocks[0].attn.q_bias.abs().sum() == 0
    assert model.patch_embed.proj.weight.shape == (192, 3, TUBELET, PATCH, PATCH)


def test_more_frames_than_configured_use_a_longer_table():
    model = tiny()
    with torch.no_grad():
        assert model(clip(1, frames=2 * FRAMES)).shape == (1, 5)


# ------------------------------------------------------------------------------------------
# Token selection invariants


def test_gather_with_all_tokens_equals_no_selection():
    model, x = tiny(), clip()
    ids_all = torch.arange(N).expand(3, -1)
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(model(x, ids_all), ref, atol=1e-6, rtol=0)
        all_real = torch.ones(3, N, dtype=torch.bool)
        torch.testing.assert_close(model(x, ids_all, all_real), ref, atol=1e-6, rtol=0)


def variable_selection() -> tuple[torch.Tensor, torch.Tensor]:
    """Three clips keeping 6, 3 and 8 tokens; padding slots hold index 0."""
    kept = [[0, 1, 2, 4, 5, 7], [0, 3, 6], list(range(N))]
    ids = torch.zeros(3, N, dtype=torch.long)
    mask = torch.zeros(3, N, dtype=torch.bool)
    for b, row in enumerate(kept):
        ids[b, : len(row)] = torch.tensor(row)
        mask[b, : len(row)] = True
    return ids, mask


@pytest.mark.parametrize("varlen", ["packed", "padded"])
@pytest.mark.parametrize("fused", [True, False])
def test_variable_length_clip_equals_clip_run_alone(varlen, fused):
    model, x = tiny(varlen=varlen, fused_attn=fused), clip()
    ids, mask = variable_selection()
    with torch.no_grad():
        batched = model(x, ids, mask)
        for b in range(3):
            length = int(mask[b].sum())
            alone = model(x[b : b + 1], ids[b : b + 1, :length])
            torch.testing.assert_close(batched[b], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("varlen", ["packed", "padded"])
def test_padding_slots_never_affect_results(varlen):
    model, x = tiny(varlen=varlen), clip()
    ids, mask = variable_selection()
    junk = torch.randint(0, N, ids.shape, generator=torch.Generator().manual_seed(1))
    other_ids = torch.where(mask, ids, junk)
    with torch.no_grad():
        expected = model(x, ids, mask)
        torch.testing.assert_close(model(x, other_ids, mask), expected, atol=1e-6, rtol=0)


def test_masked_mean_pool_is_the_mean_of_real_tokens():
    # No blocks: pooled features are exactly the mean of the kept embedded tokens.
    encoder = VideoMAEEncoder(embed_dim=16, depth=0, num_heads=2, num_frames=FRAMES, img_size=SIZE)
    ids, mask = variable_selection()
    tokens = gather_tokens(encoder.embed(clip()), ids)
    for varlen in ("packed", "padded"):
        encoder.varlen = varlen
        pooled = encoder.forward_tokens(tokens, mask)
        for b in range(3):
            torch.testing.assert_close(pooled[b], tokens[b][mask[b]].mean(0))


def test_packed_training_step_has_gradients_and_checkpointing_matches():
    model = tiny(drop_path_rate=0.0).train()
    ids, mask = variable_selection()
    x = clip()
    loss = model(x, ids, mask).square().sum()
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x, ids, mask).square().sum().backward()
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-4)


def test_packed_drop_path_drops_whole_clips():
    _, mask = variable_selection()
    packing = Packing.from_mask(mask)
    branch = torch.ones(1, sum(packing.lengths), 4)
    torch.manual_seed(3)
    scaled = drop_path_packed(branch, 0.5, packing, training=True)
    for segment in scaled[0].split(packing.lengths):
        assert segment.unique().tolist() in ([0.0], [2.0])  # one draw per clip, 1/keep_prob
    assert torch.equal(drop_path_packed(branch, 0.5, packing, training=False), branch)


def test_token_counts_packed_vs_padded():
    _, mask = variable_selection()  # 6 + 3 + 8 = 17 kept of 3 x 8 slots
    assert token_counts(mask, 3, N, "packed").overhead == 1.0
    padded = token_counts(mask, 3, N, "padded")
    assert (padded.kept, padded.processed) == (17, 24)
    assert token_counts(None, 3, 5).overhead == 1.0


def test_empty_clip_is_rejected():
    ids, mask = variable_selection()
    mask[1] = False
    with pytest.raises(ValueError, match="at least one token"):
        tiny()(clip(), ids, mask)


# ------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(size="huge"), "size='huge'.*tiny, small, base, large"),
        (dict(num_frames=5), "num_frames=5.*tubelet=2"),
        (dict(img_size=40), "height=40.*patch=16"),
    ],
)
def test_bad_model_arguments(kwargs, match):
    args = dict(size="tiny", num_frames=FRAMES, img_size=SIZE) | kwargs
    with pytest.raises(ValueError, match=match):
        build_model(args.pop("size"), 5, **args)


def test_bad_clip_shape():
    with pytest.raises(ValueError, match="num_frames=3"):
        tiny()(clip(1, frames=3))
    with pytest.raises(ValueError, match="width=40"):
        tiny()(torch.randn(1, 3, FRAMES, SIZE, 40))


# ------------------------------------------------------------------------------------------
# Checkpoints


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, skip: tuple[str, ...] = ()) -> None:
    sb = b.state_dict()
    for key, value in a.state_dict().items():
        if not key.startswith(skip):
            assert torch.equal(value, sb[key]), key


@pytest.mark.parametrize("form", ["model", "module", "raw", "encoder_prefix", "ddp_prefix"])
def test_checkpoint_round_trip(tmp_path, form):
    source = tiny()
    state = source.state_dict()
    wrapped = {
        "model": {"model": state, "epoch": 3, "args": argparse.Namespace(lr=1e-3)},
        "module": {"module": state},
        "raw": state,
        "encoder_prefix": {"model": {f"encoder.{k}": v for k, v in state.items()}},
        "ddp_prefix": {"model": {f"module.{k}": v for k, v in state.items()}},
    }[form]
    path = tmp_path / "ckpt.pth"
    torch.save(wrapped, path)
    target = build_model("tiny", 5, num_frames=FRAMES, img_size=SIZE)
    report = load_videomae_checkpoint(target, path)
    assert report.missing == () and report.unexpected == () and report.dropped == ()
    assert_same_weights(source, target)


def test_head_dropped_when_class_count_differs(tmp_path):
    path = tmp_path / "k400.pth"
    torch.save({"model": tiny(num_classes=5).state_dict()}, path)
    target = build_model("tiny", 3, num_frames=FRAMES, img_size=SIZE)
    head_before = target.head.weight.clone()
    report = load_videomae_checkpoint(target, path)
    assert report.dropped == ("head.weight", "head.bias")
    assert set(report.missing) == {"head.weight", "head.bias"}
    assert torch.equal(target.head.weight, head_before)


class NotAllowListed:
    """A class the weights-only unpickler refuses."""


def test_checkpoint_needing_pickle_gives_a_clear_error(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"model": tiny().state_dict(), "extra": NotAllowListed()}, path)
    target = build_model("tiny", 5, num_frames=FRAMES, img_size=SIZE)
    with pytest.raises(ValueError, match=r"odd\.pth.*model\.allow_pickle=true"):
        load_videomae_checkpoint(target, path)
    assert load_videomae_checkpoint(target, path, allow_pickle=True).missing == ()


def test_pretrain_checkpoint_loads_into_classifier_and_strictly_into_mae(tmp_path):
    torch.manual_seed(0)
    pre = build_pretrain_model("tiny", num_frames=FRAMES, img_size=SIZE)
    path = tmp_path / "pretrain.pth"
    torch.save({"model": pre.state_dict()}, path)

    mae = build_pretrain_model("tiny", num_frames=FRAMES, img_size=SIZE)
    report = load_videomae_checkpoint(mae, path, strict=True)
    assert report.missing == () and report.unexpected == ()
    assert_same_weights(pre, mae)

    cls = build_model("tiny", 5, num_frames=FRAMES, img_size=SIZE)
    fc_norm_before = cls.fc_norm.weight.clone()
    report = load_videomae_checkpoint(cls, path)
    assert set(report.missing) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    assert {"norm.weight", "norm.bias", "mask_token", "encoder_to_decoder.weight",
            "decoder.head.weight"} <= set(report.unexpected)
    assert torch.equal(cls.fc_norm.weight, fc_norm_before)
    assert torch.equal(cls.blocks[2].attn.qkv.weight, pre.encoder.blocks[2].attn.qkv.weight)


# ------------------------------------------------------------------------------------------
# MAE pre-training


def mae_setup():
    torch.manual_seed(0)
    model = build_pretrain_model("tiny", num_frames=FRAMES, img_size=SIZE, decoder_depth=1)
    ids_keep = torch.tensor([[0, 1, 2, 3, 5, 6], [0, 2, 3, 4, 6, 7]])  # 2 redundant per clip
    ids_visible = torch.tensor([[0, 3], [2, 7]])  # 4 masked non-redundant per clip
    return model, clip(2), ids_keep, ids_visible


def test_masked_ids_are_kept_minus_visible():
    _, _, ids_keep, ids_visible = mae_setup()
    assert masked_ids(ids_keep, ids_visible, N).tolist() == [[1, 2, 5, 6], [0, 3, 4, 6]]
    with pytest.raises(ValueError, match="subset"):
        masked_ids(ids_keep, torch.tensor([[0, 4], [2, 7]]), N)


def test_target_is_per_patch_normalised_with_channel_fastest():
    x = clip(1)
    target = patchify_target(x, TUBELET, PATCH)
    assert target.shape == (1, N, TUBELET * PATCH * PATCH * 3)
    per_channel = target[0, 0].view(-1, 3)  # (p0 p1 p2) x C
    torch.testing.assert_close(per_channel.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.std(0), torch.ones(3), atol=1e-4, rtol=0)
    std, mean = torch.tensor([0.229, 0.224, 0.225]), torch.tensor([0.485, 0.456, 0.406])
    pixels = x * std.view(1, 3, 1, 1, 1) + mean.view(1, 3, 1, 1, 1)
    first = pixels[0, :, 0, 0, :3]  # channel values of pixels (0, 0, 0..2) of token 0
    raw = patchify_target(x, TUBELET, PATCH, normalize=False)[0, 0, :9].view(3, 3)
    torch.testing.assert_close(raw, first.T)


def test_only_masked_non_redundant_tokens_contribute_to_the_loss():
    model, x, ids_keep, ids_visible = mae_setup()
    with torch.no_grad():
        loss, pred, ids_masked = model(x, ids_visible, ids_keep)
        assert torch.isfinite(loss)
        assert pred.shape == (2, 4, model.encoder.patch_volume)

        # Clip 0: visible {0, 3}, redundant {4, 7}, masked {1, 2, 5, 6}; token = t*4 + i*2 + j.
        def with_token_changed(token: int) -> torch.Tensor:
            t, rest = divmod(token, 4)
            i, j = divmod(rest, 2)
            y = x.clone()
            frames = slice(t * TUBELET, (t + 1) * TUBELET)
            rows, cols = slice(i * PATCH, (i + 1) * PATCH), slice(j * PATCH, (j + 1) * PATCH)
            y[0, :, frames, rows, cols] = torch.randn(3, TUBELET, PATCH, PATCH)
            return model.forward_loss(y, pred, ids_masked)

        assert torch.equal(with_token_changed(3), loss)  # visible
        assert torch.equal(with_token_changed(4), loss)  # redundant (MGTC dropped)
        assert not torch.equal(with_token_changed(5), loss)  # masked, non-redundant


def test_mae_loss_decreases_on_a_tiny_overfit():
    model, x, ids_keep, ids_visible = mae_setup()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = model(x, ids_visible, ids_keep)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.9 * losses[0]
