"""Checkers of notebook 01, patch embedding: exercises 1.1-1.3."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model import CrossViT
from ..utils import eval_mode
from .common import (
    ExerciseError,
    check_branch,
    check_image_batch,
    check_model,
    checker_for,
    compare,
    int_option,
    ok,
    run_learner,
    tensor_answer,
)
from .guard import Shortcut

# ----------------------------------------------------------------------------------------------------------------
# 01 · patch embedding

UNFOLD = [Shortcut(F.unfold, "F.unfold"), Shortcut((torch.Tensor, "unfold"), "Tensor.unfold"),
          Shortcut(nn.Unfold.forward, "nn.Unfold")]
CONVOLUTION = [Shortcut(nn.Conv2d.forward, "the convolution module"), Shortcut(F.conv2d, "F.conv2d"),
               Shortcut(torch.conv2d, "torch.conv2d")]


@checker_for("patchify")
def check_patchify(function: object, images: torch.Tensor, patch_size: int) -> None:
    """Exercise 1.1: ``function(images, patch_size)`` = ``images`` (B, C, H, W) cut into non-overlapping
    ``patch_size`` patches, (B, N, C * p * p): patches in row-major grid order, each flattened channel first (as
    ``conv.weight`` is). Reference: ``F.unfold``, which the function may not call."""
    name = "patchify"
    images = check_image_batch("check_patchify", images)
    p = int_option("check_patchify", "patch_size", patch_size, 1)
    b, c, h, w = images.shape
    if h % p or w % p:
        raise ValueError(f"check_patchify: the image size {h}x{w} is not divisible by patch_size {p}")
    rows, cols = h // p, w // p
    n, d = rows * cols, c * p * p
    x = images.detach().to("cpu", torch.float32)
    reference = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)  # (B, N, C*p*p)
    grid = x.reshape(b, c, rows, p, cols, p)
    answer = run_learner(name, function, images, p, shortcuts=UNFOLD)
    hints = {(b, d, n): "that is F.unfold's own layout (B, C·p·p, N); transpose the last two dimensions.",
             (b, c, n, p * p): "flatten each patch's channels too: one vector of C·p·p numbers per patch.",
             (b, rows, cols, d): "flatten the grid: one row per patch, (B, rows·cols, C·p·p).",
             (b, c, rows, p, cols, p): "permute so that the grid dimensions come first, then reshape."}
    if rows > 1 and cols > 1:
        hints[(b, (rows - 1) * (cols - 1), d)] = (
            f"that is a {rows - 1}x{cols - 1} grid, one patch short on each side: the last row and column of "
            f"patches are missing. A {h} px side holds {h} // {p} = {rows} patches, starting at 0, {p}, ..., "
            f"{(rows - 1) * p} (range(0, {h}, {p}); range(0, {h} - {p}, {p}) stops one patch early).")
    answer = tensor_answer(name, answer, "the flattened patches", (b, n, d), "(B, N, C·p·p)", hints)
    diagnoses = [
        (lambda: grid.permute(0, 2, 4, 3, 5, 1).reshape(b, n, d),
         "each patch is flattened pixel by pixel with the channels last (row, column, channel); conv.weight "
         "flattens channel first: permute to (B, rows, cols, C, p, p) before reshaping."),
        (lambda: grid.permute(0, 4, 2, 1, 3, 5).reshape(b, n, d),
         "the patches are in column-major order; token k must be patch (k // cols, k % cols), so the grid's row "
         "dimension comes before its column dimension."),
        (lambda: grid.permute(0, 2, 4, 1, 5, 3).reshape(b, n, d),
         "inside each patch, rows and columns are swapped: flatten (C, row, column), in that order."),
    ]
    compare(name, answer, reference, what="F.unfold's patches", diagnoses=diagnoses, atol=1e-6, rtol=0)
    if rows > 1:  # a second input the learner has not been shown: flipped, one row of patches shorter
        other = images.flip(-1)[:, :, :(rows - 1) * p]
        where = (f"a second, {(rows - 1) * p}x{w} px input (the first was right: compute from the input's own "
                 "shape, not from fixed sizes)")
        try:
            second = run_learner(name, function, other, p, shortcuts=UNFOLD)
        except ExerciseError as err:
            raise type(err)(f"{err} (on {where})") from err
        expected = F.unfold(other.detach().to("cpu", torch.float32), kernel_size=p, stride=p).transpose(1, 2)
        second = tensor_answer(name, second, f"the flattened patches of {where}", tuple(expected.shape),
                               "(B, N, C·p·p)")
        compare(name, second, expected, what=f"F.unfold's patches of {where}", atol=1e-6, rtol=0)
    ok(name, f"your {b}x{n} patches of {d} numbers equal F.unfold's ({rows}x{cols} grid of {p} px patches).")


def _conv_embedding(checker: str, model: CrossViT, branch: str) -> nn.Conv2d:
    conv = getattr(model.embed[branch].patch_embed, "proj", None)
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"{checker}: the {branch} branch of this model has no single-convolution patch "
                         "embedding (seed flavour or a 3-convolution stem); use a paper-flavour model")
    return conv


def _branch_image(checker: str, model: CrossViT, branch_image: object, branch: str) -> torch.Tensor:
    image = check_image_batch(checker, branch_image)
    side = model.branch_image_size(branch)
    if image.shape[1:] != (model.in_chans, side, side):
        raise ValueError(f"{checker}: the {branch} branch patchifies ({model.in_chans}, {side}, {side}) images "
                         f"(model.branch_images(images)['{branch}']), got {tuple(image.shape)}")
    return image


@checker_for("embed_patches")
def check_embed_patches(function: object, model: CrossViT, branch_image: torch.Tensor, branch: str) -> None:
    """Exercise 1.2: ``function(patches, conv)`` = the patch tokens (B, N, D) of ``branch_image`` (the image the
    branch sees; ``patches`` are its flattened patches, as ``F.unfold`` gives them, ``conv`` the branch's patch
    convolution), computed as the patches times the convolution's weight matrix plus its bias. Reference:
    ``model.embed[branch].patch_embed``; the function may not run the convolution."""
    name, checker = "embed_patches", "check_embed_patches"
    model = check_model(checker, model)
    branch = check_branch(checker, model, branch)
    conv = _conv_embedding(checker, model, branch)
    image = _branch_image(checker, model, branch_image, branch)
    b, n, d = image.shape[0], model.num_patches(branch), conv.out_channels
    p = model.patch_size(branch)
    patches = F.unfold(image.detach(), kernel_size=p, stride=p).transpose(1, 2)  # (B, N, C*p*p)
    with torch.no_grad(), eval_mode(model):
        reference = model.embed[branch].patch_embed(image)  # (B, N, D)
    with torch.no_grad():
        answer = run_learner(name, function, patches, conv, shortcuts=CONVOLUTION, model=model)
    answer = tensor_answer(
        name, answer, "the patch tokens", (b, n, d), "(B, N, D)",
        {(b, d, n): "that is the convolution's channel-first layout; transpose to one row per patch.",
         (n, d): "keep the batch dimension."})
    x = patches.detach().cpu().float()
    weight = conv.weight.detach().cpu().float()  # (D, C, p, p)
    bias = conv.bias.detach().cpu().float() if conv.bias is not None else torch.zeros(d)

    def linear(w: torch.Tensor) -> torch.Tensor:  # the patches times a flattened (D, C*p*p) weight, plus the bias
        return x @ w.reshape(d, -1).T + bias

    diagnoses = [
        (lambda: linear(weight.permute(0, 2, 3, 1)),
         "the weight was flattened channels last (row, column, channel), while each patch is flattened channel "
         "first (as F.unfold gives it): flatten the weight in the patches' order, (D, C, p, p) -> (D, C·p·p)."),
        (lambda: linear(weight.transpose(2, 3)),
         "inside each filter, rows and columns are swapped: flatten (channel, row, column) in that order."),
    ]
    if conv.bias is not None:
        diagnoses.append((lambda: reference.cpu().float() - bias, "the convolution's bias is missing: add conv.bias."))
    compare(name, answer, reference, what="the conv patch embedding's tokens", diagnoses=diagnoses, atol=1e-4,
             rtol=1e-4)
    ok(name, f"your tokens equal the {branch} branch's convolution output, {b} images x {n} patches x {d} "
              "numbers: a strided convolution is a linear map on flattened patches.")


@checker_for("token_sequence")
def check_token_sequence(function: object, model: CrossViT, branch_image: torch.Tensor, branch: str) -> None:
    """Exercise 1.3: ``function(embedding, branch_image)`` = [CLS, patch tokens] + position embeddings,
    (B, 1 + N, D), for the image the branch sees (``embedding = model.embed[branch]``). Reference: the embedding
    module's own forward in eval mode, which the function may not call."""
    name, checker = "token_sequence", "check_token_sequence"
    model = check_model(checker, model)
    branch = check_branch(checker, model, branch)
    image = _branch_image(checker, model, branch_image, branch)
    embedding = model.embed[branch]
    with torch.no_grad(), eval_mode(model):
        reference = embedding(image)  # (B, 1 + N, D)
        patches = embedding.patch_embed(image)
        cls = embedding.cls_token.expand(image.shape[0], -1, -1)
        pos = embedding.pos_embed
    b, n, d = reference.shape[0], reference.shape[1] - 1, reference.shape[2]
    with torch.no_grad(), eval_mode(model):
        answer = run_learner(name, function, embedding, image, model=model,
                             shortcuts=[Shortcut(type(embedding).forward, f"model.embed['{branch}'] itself")])
    answer = tensor_answer(
        name, answer, "the token sequence", (b, 1 + n, d), "(B, 1 + N, D)",
        {(b, n, d): "the CLS token is missing: prepend it (torch.cat along dimension 1).",
         (1, 1 + n, d): "expand the CLS token to the batch (cls_token.expand(B, -1, -1)) before concatenating."})
    diagnoses = [
        (lambda: torch.cat((cls, patches), dim=1),
         "the position embeddings are missing: add embedding.pos_embed to the whole sequence."),
        (lambda: torch.cat((patches, cls), dim=1) + pos,
         "the CLS token is at the end; it goes in front, as token 0."),
        (lambda: torch.cat((cls, patches + pos[:, 1:]), dim=1),
         "the CLS token did not get its position embedding: add pos_embed after concatenating."),
    ]
    compare(name, answer, reference, what="the branch embedding's tokens", diagnoses=diagnoses, atol=1e-5)
    ok(name, f"your (B, 1 + {n}, {d}) sequence equals model.embed['{branch}']: the CLS token is token 0 and "
              "every token carries its learned position.")
