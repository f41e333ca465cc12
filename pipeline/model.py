"""VideoMAE ViT (tiny / small / base / large): classifier and MAE pre-training model.

Layout and numerics follow the official MCG-NJU/VideoMAE code (`modeling_finetune.py`,
`modeling_pretrain.py`) so that its checkpoints load unchanged and give the same logits:
Conv3d tubelet embedding, a fixed interleaved sin-cos position table that is *not* in the
state dict, attention with q and v biases only (k bias fixed at zero), pre-norm timm blocks,
LayerNorm eps 1e-6, mean pooling -> `fc_norm` -> `head`.

Tokens are flattened t-major, then h, then w (index = t*H'*W' + i*W' + j). Position
embeddings are added to *all* tokens before any are dropped, so a model runs on any subset of
tokens (`ids_keep`, sorted ascending, original order) and any frame count.

Variable-length batches (`keep_mask` with rows of different lengths, as `mgtc_threshold`
gives) run *packed*: the real tokens of all clips are concatenated into one sequence
`[1, sum(L_b), D]` for the norms, linear layers and MLP, and attention runs per clip on its
own segment (block-diagonal; one varlen kernel on CUDA, a per-clip loop on CPU:
`pipeline/packing.py`). No padding token is ever computed. A padded path with a key-padding
mask is kept (`varlen="padded"`) only so the cost of padding can be measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import Tensor, nn

from pipeline.layers import LN_EPS, TubeletEmbed, VideoMAEAttention, init_official, make_blocks, run_blocks
from pipeline.packing import Packing, token_counts  # noqa: F401  (public here too)
from pipeline.selection import gather_tokens
from pipeline.vocab import IMAGENET_MEAN, IMAGENET_STD, token_grid

VARLEN_MODES = ("packed", "padded")


@dataclass(frozen=True)
class VitSize:
    """Encoder width / depth / heads and the MAE decoder's width / heads for one size."""

    dim: int
    depth: int
    heads: int
    decoder_dim: int
    decoder_heads: int


# Official registry (modeling_finetune.py / modeling_pretrain.py); "tiny" is ours, for tests.
VIT_SIZES: dict[str, VitSize] = {
    "tiny": VitSize(dim=192, depth=4, heads=3, decoder_dim=96, decoder_heads=3),
    "small": VitSize(dim=384, depth=12, heads=6, decoder_dim=192, decoder_heads=3),
    "base": VitSize(dim=768, depth=12, heads=12, decoder_dim=384, decoder_heads=6),
    "large": VitSize(dim=1024, depth=24, heads=16, decoder_dim=512, decoder_heads=8),
}


def vit_size(size: str) -> VitSize:
    """The dimensions of model `size`; ValueError naming the allowed sizes otherwise."""
    if size not in VIT_SIZES:
        raise ValueError(f"size={size!r} is not a model size; allowed: {', '.join(VIT_SIZES)}")
    return VIT_SIZES[size]


def sincos_table(num_positions: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Official VideoMAE sin-cos table: [num_positions, dim] float32.

    angle(p, j) = p / 10000^(2*(j//2)/dim); even j take sin, odd j take cos (interleaved, not
    concatenated halves). Computed in float64 like the official numpy code, then cast, so the
    rows agree bit for bit. Row p depends only on p: the table for N tokens is the first N
    rows of any longer table.
    """
    pos = torch.arange(num_positions, dtype=torch.float64, device=device)[:, None]
    j = torch.arange(dim, device=device)
    angles = pos / torch.pow(10000.0, (2 * (j // 2)).double() / dim)
    table = torch.where(j % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.float()


# --------------------------------------------------------------------------------------------
# Encoder and classifier


class VideoMAEEncoder(nn.Module):
    """Tubelet embedding + sin-cos positions + transformer blocks (+ `norm` when `final_norm`).

    Keys: `patch_embed.proj.*`, `blocks.{i}.*`, and `norm.*` only when `final_norm` (the
    pre-training encoder; the mean-pooling classifier has no final norm, as official).
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        num_frames: int = 16,
        img_size: int = 224,
        patch_size: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        final_norm: bool = False,
        varlen: str = "packed",
    ) -> None:
        super().__init__()
        if varlen not in VARLEN_MODES:
            raise ValueError(f"varlen={varlen!r}; allowed: {', '.join(VARLEN_MODES)}")
        grid = token_grid(num_frames, img_size, img_size, tubelet_size, patch_size)
        self.num_patches = math.prod(grid)
        self.embed_dim = embed_dim
        self.varlen = varlen
        self.grad_checkpointing = False
        self.patch_embed = TubeletEmbed(patch_size, tubelet_size, in_chans, embed_dim)
        # Non-persistent: official checkpoints have no pos_embed key; a clip with more tokens
        # than the configured size gets a longer table built on the fly (same leading rows).
        table = sincos_table(self.num_patches, embed_dim)
        self.register_buffer("pos_embed", table, persistent=False)
        self.blocks = make_blocks(embed_dim, depth, num_heads, mlp_ratio, drop_path_rate)
        self.norm = nn.LayerNorm(embed_dim, eps=LN_EPS) if final_norm else nn.Identity()

    @property
    def patch_volume(self) -> int:
        """Pixels per token: in_chans * tubelet * patch * patch."""
        return self.patch_embed.proj.weight[0].numel()

    def set_fused_attn(self, enabled: bool) -> None:
        for module in self.modules():
            if isinstance(module, VideoMAEAttention):
                module.fused_attn = enabled

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.grad_checkpointing = enabled

    def no_weight_decay(self) -> set[str]:
        """Parameter names timm's optimizer factory excludes from weight decay, besides every
        1-D parameter (biases, q/v biases, norms). VideoMAE's list is pos_embed / cls_token;
        here the position table is a buffer and there is no cls token, so nothing is added."""
        return set()

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's layer grouping for layer-wise lr decay, with VideoMAE's layer ids
        (`optim_factory.get_layer_id_for_vit`): patch_embed = 0, blocks.i = i + 1, and the
        final norm / fc_norm / head one past the last block (scale 1)."""
        return {"stem": r"^patch_embed", "blocks": r"^blocks\.(\d+)", "head": r"^norm|^fc_norm|^head"}

    def position_table(self, num_tokens: int, like: Tensor) -> Tensor:
        """[num_tokens, D] sin-cos rows, on `like`'s device and dtype."""
        if num_tokens <= self.pos_embed.shape[0]:
            table = self.pos_embed[:num_tokens]
        else:
            table = sincos_table(num_tokens, self.embed_dim, device=like.device)
        return table.to(like.dtype)

    def embed(self, x: Tensor) -> Tensor:
        """x: [B, C, T, H, W] -> tokens with positions added, [B, N, D] (all tokens)."""
        tokens = self.patch_embed(x)
        return tokens + self.position_table(tokens.shape[1], tokens)

    def forward_tokens(self, tokens: Tensor, keep_mask: Tensor | None = None) -> Tensor:
        """Run the blocks and `norm` on gathered tokens and mean-pool over real ones.

        tokens: [B, K, D]; keep_mask: [B, K] bool, True = real token, or None (all real).
        Returns pooled features [B, D]. Padding slots never influence any real token.
        """
        blocks = partial(run_blocks, self.blocks, grad_checkpointing=self.grad_checkpointing)
        if keep_mask is None:
            return self.norm(blocks(tokens)).mean(1)
        if keep_mask.shape != tokens.shape[:2]:
            raise ValueError(
                f"keep_mask shape {tuple(keep_mask.shape)} != tokens {tuple(tokens.shape[:2])}"
            )
        packing = Packing.from_mask(keep_mask)  # the step's one host sync: the lengths
        if min(packing.lengths) == 0:
            raise ValueError("every clip must keep at least one token (a keep_mask row is False)")
        if min(packing.lengths) == tokens.shape[1]:  # every slot real: a dense batch
            return self.norm(blocks(tokens)).mean(1)
        if self.varlen == "packed":
            packed = self.norm(blocks(packing.pack(tokens), packing=packing))
            return packing.segment_mean(packed)
        padded, mask = packing.pad(tokens)  # [B, max_len, D]: padded to the longest clip
        x = self.norm(blocks(padded, attn_mask=mask[:, None, None, :]))
        weights = mask.to(x.dtype)[..., None]
        return (x * weights).sum(1) / weights.sum(1)


class VideoMAEClassifier(VideoMAEEncoder):
    """VideoMAE fine-tuning model: encoder -> masked mean pool -> fc_norm -> dropout -> head.

    State dict = official fine-tune keys: `patch_embed.proj.*`, `blocks.{i}.{norm1, attn.qkv.
    weight, attn.q_bias, attn.v_bias, attn.proj, norm2, mlp.fc1, mlp.fc2}`, `fc_norm.*`,
    `head.*`.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        fc_drop_rate: float = 0.0,
        head_init_scale: float = 0.001,
        **encoder_kwargs: object,
    ) -> None:
        super().__init__(final_norm=False, **encoder_kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes} must be >= 1")
        self.num_classes = num_classes
        self.fc_norm = nn.LayerNorm(self.embed_dim, eps=LN_EPS)
        self.fc_dropout = nn.Dropout(fc_drop_rate) if fc_drop_rate > 0 else nn.Identity()
        self.head = nn.Linear(self.embed_dim, num_classes)
        self.apply(partial(init_official, linear_init="trunc_normal"))
        # run_class_finetuning.py --init_scale 0.001: near-zero initial logits.
        with torch.no_grad():
            self.head.weight.mul_(head_init_scale)
            self.head.bias.mul_(head_init_scale)

    def forward_features(
        self, x: Tensor, ids_keep: Tensor | None = None, keep_mask: Tensor | None = None
    ) -> Tensor:
        """x: [B, 3, T, H, W] ImageNet-normalised -> fc_norm(mean of kept tokens) [B, D].

        ids_keep: [B, K] token indices (t-major order), sorted ascending; None keeps all.
        keep_mask: [B, K] bool, True = real token, False = padding slot; None = all real.
        With ids_keep None, keep_mask (if given) is over all N tokens.
        """
        tokens = self.embed(x)
        if ids_keep is not None:
            if ids_keep.ndim != 2 or ids_keep.shape[0] != tokens.shape[0]:
                raise ValueError(
                    f"ids_keep must be [B, K] with B={tokens.shape[0]}, got {tuple(ids_keep.shape)}"
                )
            tokens = gather_tokens(tokens, ids_keep)
        return self.fc_norm(self.forward_tokens(tokens, keep_mask))

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """features: [B, D] -> logits [B, num_classes] (or the dropped-out features)."""
        features = self.fc_dropout(features)
        return features if pre_logits else self.head(features)

    def forward(
        self, x: Tensor, ids_keep: Tensor | None = None, keep_mask: Tensor | None = None
    ) -> Tensor:
        """x: [B, 3, T, H, W] -> logits [B, num_classes]; see `forward_features`."""
        return self.forward_head(self.forward_features(x, ids_keep, keep_mask))


def build_model(
    size: str,
    num_classes: int,
    *,
    num_frames: int = 16,
    img_size: int = 224,
    patch_size: int = 16,
    tubelet_size: int = 2,
    drop_path_rate: float = 0.0,
    fc_drop_rate: float = 0.0,
    fused_attn: bool = True,
    head_init_scale: float = 0.001,
    varlen: str = "packed",
) -> VideoMAEClassifier:
    """VideoMAE classifier of `size` in VIT_SIZES ("tiny", "small", "base", "large")."""
    dims = vit_size(size)
    model = VideoMAEClassifier(
        num_classes=num_classes,
        fc_drop_rate=fc_drop_rate,
        head_init_scale=head_init_scale,
        embed_dim=dims.dim,
        depth=dims.depth,
        num_heads=dims.heads,
        num_frames=num_frames,
        img_size=img_size,
        patch_size=patch_size,
        tubelet_size=tubelet_size,
        drop_path_rate=drop_path_rate,
        varlen=varlen,
    )
    model.set_fused_attn(fused_attn)
    return model


# --------------------------------------------------------------------------------------------
# MAE pre-training


def _check_rows(ok: Tensor, message: str) -> None:
    """Raise ValueError(message) unless the 0-d bool `ok` holds. On CUDA a device-side assert
    instead: reading `ok` to the host would stall every step for a check that never fails."""
    if ok.device.type == "cuda":
        torch._assert_async(ok, message)
    elif not bool(ok):
        raise ValueError(message)


def masked_ids(ids_keep: Tensor, ids_visible: Tensor, num_tokens: int) -> Tensor:
    """Tokens kept (non-redundant) but hidden from the encoder: the reconstruction targets.

    ids_keep: [B, K], ids_visible: [B, V] (a subset of each ids_keep row), original token
    indices < num_tokens. Returns [B, K - V], sorted ascending. Rows must share K and V.
    """
    B = ids_keep.shape[0]
    target = torch.zeros(B, num_tokens, dtype=torch.bool, device=ids_keep.device)
    target.scatter_(1, ids_keep, True)
    _check_rows(target.gather(1, ids_visible).all(), "ids_visible must be a subset of ids_keep in every row")
    target.scatter_(1, ids_visible, False)
    num_masked = ids_keep.shape[1] - ids_visible.shape[1]
    _check_rows((target.sum(1) == num_masked).all(), "ids_keep / ids_visible rows must not repeat indices")
    order = torch.arange(num_tokens, device=ids_keep.device).expand(B, -1)
    # Targets first (their own index), the rest pushed past the end; a sort keeps order.
    return torch.where(target, order, num_tokens).sort(dim=1).values[:, :num_masked]


def tubelet_pixels(
    x: Tensor,
    tubelet_size: int,
    patch_size: int,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> Tensor:
    """x: [B, C, T, H, W] normalised -> [0, 1] pixels per token, [B, N, tubelet*patch*patch, C].

    Tokens in t-major order; pixels inside a token ordered (p0 p1 p2) as official.
    """
    B, C, T, H, W = x.shape
    t, h, w = token_grid(T, H, W, tubelet_size, patch_size)
    pixels = x * x.new_tensor(std).view(1, C, 1, 1, 1) + x.new_tensor(mean).view(1, C, 1, 1, 1)
    pixels = pixels.reshape(B, C, t, tubelet_size, h, patch_size, w, patch_size)
    # -> [B, t, h, w, p0, p1, p2, C]
    return pixels.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(B, t * h * w, -1, C)


def patchify_target(
    x: Tensor, tubelet_size: int, patch_size: int, normalize: bool = True
) -> Tensor:
    """VideoMAE reconstruction target: x [B, C, T, H, W] normalised -> [B, N, P].

    normalize (official `normlize_target`, default): per token and per channel
    (p - mean) / (sqrt(unbiased var) + 1e-6) over its tubelet*patch*patch pixels. Flattened
    (p0 p1 p2 c), channel fastest: P = tubelet*patch*patch*C.
    """
    pixels = tubelet_pixels(x, tubelet_size, patch_size)
    if normalize:
        pixels = (pixels - pixels.mean(dim=-2, keepdim=True)) / (
            pixels.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6
        )
    return pixels.flatten(2)


class VideoMAEDecoder(nn.Module):
    """Narrow MAE decoder: blocks -> norm -> head on the last `num_targets` tokens.

    Keys: `blocks.{i}.*`, `norm.*`, `head.*` (head: dim -> patch_volume).
    """

    def __init__(
        self, *, dim: int, depth: int, num_heads: int, out_dim: int, mlp_ratio: float = 4.0
    ) -> None:
        super().__init__()
        self.blocks = make_blocks(dim, depth, num_heads, mlp_ratio, drop_path_rate=0.0)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.head = nn.Linear(dim, out_dim)

    def forward(self, x: Tensor, num_targets: int, grad_checkpointing: bool = False) -> Tensor:
        """x: [B, L, dim] -> predictions for its last `num_targets` tokens, [B, M, out_dim]."""
        x = run_blocks(self.blocks, x, grad_checkpointing=grad_checkpointing)
        return self.head(self.norm(x[:, -num_targets:]))


class VideoMAEPretrain(nn.Module):
    """VideoMAE MAE pre-training with MGTC: only non-redundant tokens take part.

    Tokens fall in three sets per clip (indices in t-major order, each row sorted):
    - redundant: not in `ids_keep` (MGTC dropped them); neither encoded nor reconstructed,
    - visible: `ids_visible`, a subset of `ids_keep` (what remains after the tube / random
      mask drawn over the kept tokens); the encoder sees only these,
    - masked: ids_keep minus ids_visible; the decoder reconstructs these and only these
      contribute to the loss.
    Every row must have the same K and V (the official encoder needs equal lengths too).

    State dict = official pre-train keys: `encoder.{patch_embed, blocks, norm}.*`,
    `encoder_to_decoder.weight`, `mask_token`, `decoder.{blocks, norm, head}.*`.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        decoder_dim: int,
        decoder_heads: int,
        decoder_depth: int = 4,
        num_frames: int = 16,
        img_size: int = 224,
        patch_size: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        norm_pix_loss: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = VideoMAEEncoder(
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            num_frames=num_frames,
            img_size=img_size,
            patch_size=patch_size,
            tubelet_size=tubelet_size,
            in_chans=in_chans,
            mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate,
            final_norm=True,
        )
        self.tubelet_size = tubelet_size
        self.patch_size = patch_size
        self.norm_pix_loss = norm_pix_loss
        self.decoder_dim = decoder_dim
        self.encoder_to_decoder = nn.Linear(embed_dim, decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder = VideoMAEDecoder(
            dim=decoder_dim,
            depth=decoder_depth,
            num_heads=decoder_heads,
            out_dim=self.encoder.patch_volume,
            mlp_ratio=mlp_ratio,
        )
        table = sincos_table(self.encoder.num_patches, decoder_dim)
        self.register_buffer("decoder_pos_embed", table, persistent=False)
        self.apply(partial(init_official, linear_init="xavier"))
        trunc_normal_(self.mask_token, std=0.02)

    def set_fused_attn(self, enabled: bool) -> None:
        for module in self.modules():
            if isinstance(module, VideoMAEAttention):
                module.fused_attn = enabled

    def no_weight_decay(self) -> set[str]:
        """As official pre-training: the mask token (3-D, so not caught by the 1-D rule)."""
        return {"mask_token"}

    def _decoder_positions(self, num_tokens: int, like: Tensor) -> Tensor:
        if num_tokens <= self.decoder_pos_embed.shape[0]:
            return self.decoder_pos_embed[:num_tokens].to(like.dtype)
        return sincos_table(num_tokens, self.decoder_dim, device=like.device).to(like.dtype)

    def forward_encoder(self, x: Tensor, ids_visible: Tensor) -> tuple[Tensor, int]:
        """x: [B, 3, T, H, W] -> (latent of the visible tokens [B, V, D] after `norm`, N)."""
        tokens = self.encoder.embed(x)
        visible = gather_tokens(tokens, ids_visible)
        checkpointing = self.encoder.grad_checkpointing
        latent = run_blocks(self.encoder.blocks, visible, grad_checkpointing=checkpointing)
        return self.encoder.norm(latent), tokens.shape[1]

    def forward_decoder(
        self, latent: Tensor, ids_visible: Tensor, ids_masked: Tensor, num_tokens: int
    ) -> Tensor:
        """latent: [B, V, D] -> predicted targets of `ids_masked` [B, M, P].

        As official: [visible + pos(visible), mask_token + pos(masked)] in that order (the
        positions are shuffled, not the tokens). Redundant tokens are absent from both.
        """
        x = self.encoder_to_decoder(latent)
        pos = self._decoder_positions(num_tokens, x)[None].expand(x.shape[0], -1, -1)
        visible = x + gather_tokens(pos, ids_visible)
        masked = self.mask_token + gather_tokens(pos, ids_masked)
        x = torch.cat((visible, masked), dim=1)
        return self.decoder(x, ids_masked.shape[1], self.encoder.grad_checkpointing)

    def forward_loss(self, x: Tensor, pred: Tensor, ids_masked: Tensor) -> Tensor:
        """Mean squared error between pred [B, M, P] and the targets of `ids_masked`, in fp32
        (under bf16 autocast pred is bf16; the target is never rounded to it)."""
        target = patchify_target(x, self.tubelet_size, self.patch_size, self.norm_pix_loss)
        return F.mse_loss(pred.float(), gather_tokens(target, ids_masked).float())

    def forward(
        self, x: Tensor, ids_visible: Tensor, ids_keep: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x: [B, 3, T, H, W] ImageNet-normalised.

        ids_visible: [B, V] encoder-visible tokens, sorted ascending, subset of ids_keep.
        ids_keep: [B, K] MGTC-kept (non-redundant) tokens, sorted ascending; None = all.
        Returns (loss, pred [B, M, P], ids_masked [B, M]).
        """
        latent, num_tokens = self.forward_encoder(x, ids_visible)
        if ids_keep is None:
            ids_keep = torch.arange(num_tokens, device=x.device).expand(x.shape[0], -1)
        ids_masked = masked_ids(ids_keep, ids_visible, num_tokens)
        if ids_masked.shape[1] == 0:
            raise ValueError("no masked token to reconstruct: ids_visible equals ids_keep")
        pred = self.forward_decoder(latent, ids_visible, ids_masked, num_tokens)
        return self.forward_loss(x, pred, ids_masked), pred, ids_masked


def build_pretrain_model(
    size: str,
    *,
    num_frames: int = 16,
    img_size: int = 224,
    patch_size: int = 16,
    tubelet_size: int = 2,
    decoder_depth: int = 4,
    drop_path_rate: float = 0.0,
    norm_pix_loss: bool = True,
    fused_attn: bool = True,
) -> VideoMAEPretrain:
    """MAE pre-training model of `size`, decoder width / heads from the official table."""
    dims = vit_size(size)
    model = VideoMAEPretrain(
        embed_dim=dims.dim,
        depth=dims.depth,
        num_heads=dims.heads,
        decoder_dim=dims.decoder_dim,
        decoder_heads=dims.decoder_heads,
        decoder_depth=decoder_depth,
        num_frames=num_frames,
        img_size=img_size,
        patch_size=patch_size,
        tubelet_size=tubelet_size,
        drop_path_rate=drop_path_rate,
        norm_pix_loss=norm_pix_loss,
    )
    model.set_fused_attn(fused_attn)
    return model
