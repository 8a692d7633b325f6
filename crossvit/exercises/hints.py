"""Hints in tiers: ``exercises.hint("4.1")`` gives the next hint of exercise 4.1, one more each call.

The first tier names the idea, the second the steps, the last the pieces of PyTorch that do them; none is the
code itself, which lives only in the teacher's edition of the course (``notebooks/solutions/<notebook>.py``; the
student edition and the graded assignments do not have it, and the last message says so).
"""

from __future__ import annotations

from pathlib import Path

from .common import exercise

HINTS: dict[str, tuple[str, ...]] = {
    "patchify": (
        "A patch is a p x p window of every channel; cutting the image into them is only a change of how the same "
        "numbers are indexed: no arithmetic is needed.",
        "Split each spatial side into (number of patches, p), bring the two grid dimensions in front of the "
        "channel and the two in-patch dimensions, then flatten: one row per patch, channel first inside it.",
        "Tensor.reshape to (B, C, rows, p, cols, p), Tensor.permute to (B, rows, cols, C, p, p), and one more "
        "reshape to (B, rows * cols, C * p * p).",
    ),
    "embed_patches": (
        "A convolution whose stride equals its kernel size sees each patch once: it is one linear map applied to "
        "every flattened patch.",
        "Flatten the convolution's weight (D, C, p, p) into a (D, C*p*p) matrix in the same channel-first order "
        "as the patches, multiply every patch by it, and add the bias.",
        "conv.weight.reshape(D, -1), the @ operator (or torch.einsum) and conv.bias.",
    ),
    "token_sequence": (
        "The sequence a branch's encoder reads is [its CLS token, the patch tokens], each token with its position "
        "added.",
        "Embed the patches with the embedding's patch_embed, put the learned CLS token in front of them (one copy "
        "per image), then add pos_embed to the whole sequence.",
        "embedding.patch_embed(...), embedding.cls_token.expand(B, -1, -1), torch.cat along dimension 1, and "
        "embedding.pos_embed.",
    ),
    "cls_attention_row": (
        "Attention weights are softmax(q k^T / sqrt(d)) over the keys; the CLS row uses only the CLS token's "
        "query, and this is a pre-norm layer.",
        "Normalise the tokens with layer.norm1, compute q, k (and v) with layer.attn.to_qkv, split the heads, "
        "score the CLS query against every key, scale, softmax over the keys.",
        "layer.norm1, layer.attn.to_qkv, reshape/permute to (3, B, heads, N, dim_head), q[:, :, :1] @ "
        "k.transpose(-2, -1), layer.attn.attention_map.scale, softmax(dim=-1).",
    ),
    "logits_from_heads": (
        "Each branch has its own classifier on its own CLS token; the model's answer combines the two.",
        "For each branch: take token 0 of its final tokens, apply the head's LayerNorm then its Linear; then "
        "combine the two heads' logits the way this model's config says (mean for the paper flavour, sum for "
        "the seed flavour).",
        "features[branch][:, 0], model.heads[branch].norm and .fc, model.arch.logit_reduction.",
    ),
    "record_with_hooks": (
        "A forward hook sees a module's output; the attention map module's output is the map.",
        "Register a forward hook on site.module for each chosen site, run one forward pass, keep each output "
        "under its own site's name, and remove every hook afterwards, also when the forward pass fails.",
        "crossvit.attention_sites(model), register_forward_hook returns a handle with .remove(), try/finally; a "
        "name bound when the hook is made (a default argument or functools.partial), not read from the loop "
        "variable when the hook runs.",
    ),
    "fusion_direction": (
        "In the paper flavour the CLS token is projected to the other branch's width, reads [itself, the other "
        "patches] through attention with itself as the only query, and goes back to its own width.",
        "z = project_in(cls); context = layer-normalised [z, other patches]; q from the context's first token, k "
        "and v from all of it; attention = softmax of the scores q·kᵀ scaled by 1/sqrt(dim_head); new CLS = "
        "project_out(z + the attention output after attn.to_out), with z itself (not its normalised copy) as the "
        "residual.",
        "fusion.project_in, fusion.norm, torch.cat along dimension 1, fusion.attn.to_q and .to_kv (then "
        ".chunk(2, dim=-1)), reshape to (B, tokens, heads, dim_head) and transpose(1, 2) to split the heads, "
        "fusion.attn.attention_map.scale (= dim_head ** -0.5), softmax(dim=-1), fusion.attn.to_out, "
        "fusion.project_out.",
    ),
    "rollout": (
        "Rollout multiplies the layers' attention matrices, each mixed with the identity for the residual path.",
        "For every layer in forward order: average the heads, take 0.5 A + 0.5 I, renormalise the rows, and "
        "multiply it on the LEFT of the running product; the map is the CLS row of the product over the patches.",
        "A.mean(dim=1), torch.eye(N), A.sum(-1, keepdim=True), the @ operator, and R[:, 0, 1:].",
    ),
    "spread_to_pixels": (
        "Every input pixel belongs to exactly one patch of the grid; its value is that patch's value.",
        "Reshape the patch map to its (rows, cols) grid, work out for every pixel row and column which patch row "
        "and column cover it (the grid spans the whole input image), and index the grid with them.",
        "Tensor.reshape(B, rows, cols), torch.arange(image_size) * rows // image_size, and advanced indexing "
        "grid[:, index][:, :, index].",
    ),
    "gradient_weighted_attention": (
        "Chefer et al. weight each attention entry by its gradient and keep only what pushes the score up.",
        "Multiply the gradient and the attention entry by entry, keep the positive part, then average over the "
        "heads (in that order).",
        "The * operator, Tensor.clamp(min=0) and Tensor.mean(dim=1).",
    ),
    "pointing_hits": (
        "The default rule counts all the maximal pixels of a map, not only the first one: a hit is a map whose "
        "maximal pixels mostly lie on the object.",
        "For each map: find every pixel within a relative 1e-6 of the maximum, count how many of them lie in the "
        "mask, and compare with half of all of them (strictly more than half).",
        "maps[k].max(), a comparison giving a bool mask, the & operator with masks[k], Tensor.sum().",
    ),
    "saliency_map": (
        "Saliency asks how much the class score moves when one pixel moves: the gradient of the logit with "
        "respect to the input.",
        "Make a copy of the images that requires grad, take the target class's logit of each image, back-"
        "propagate their sum, and reduce the absolute gradient over the colour channels by the maximum.",
        "images.clone().requires_grad_(True), logits.gather(1, target[:, None]), .backward() or "
        "torch.autograd.grad, .abs().amax(dim=1); the model in eval mode.",
    ),
    "integrated_gradients": (
        "Integrated gradients average the gradient along the straight path from a black image to the image, and "
        "scale by the difference between the two.",
        "For k = 1 .. m: the point baseline + k/m (x - baseline); the gradient of the target logit there; average "
        "the m gradients and multiply by (x - baseline).",
        "A Python loop over k (or one batched forward), torch.autograd.grad, torch.zeros_like(images) as the "
        "baseline.",
    ),
    "lrp_attention": (
        "The rule changes only how gradients flow, never a forward value: a tensor can pass its value on unchanged "
        "while only a fraction c of the gradient arriving at it goes back to it.",
        "Make stand-ins for q, k and v that equal them in value but hand back only 1/4 (q, k) and 1/2 (v) of "
        "their gradient: split each into a part that carries the gradient, weighted c, and a part of weight 1 - c "
        "that carries none; then compute the attention from the stand-ins as usual.",
        "Tensor.detach() gives the part without gradient; the @ operator, k.transpose(-2, -1), the scale as a "
        "factor of the scores, softmax(dim=-1).",
    ),
    "lr_schedule": (
        "The rate rises linearly during the warm-up, then falls along half a cosine to zero.",
        "Below warmup_steps the multiplier is (step + 1) / warmup_steps; after it, progress = (step - warmup) / "
        "(steps - warmup) and the multiplier is 0.5 (1 + cos(pi progress)).",
        "math.cos and math.pi; step 0 already trains, which is why the warm-up counts step + 1.",
    ),
    "train_with_one_change": (
        "An experiment changes one thing and keeps the rest, so that a difference can be put down to it.",
        "Make a copy of the baseline config with exactly one training setting changed (not a measurement setting "
        "such as eval_images or device) and train it with crossvit.train.train.",
        "dataclasses.replace(config, <one field>=...), then return train(new_config) unchanged.",
    ),
    "eval_transform": (
        "timm's eval transform resizes, crops the centre, scales to [0, 1] and normalises, in that order.",
        "Resize so that the shorter side becomes floor(size / crop_pct) (the longer side keeps the aspect ratio, "
        "truncated), crop the central size x size, make a channel-first float tensor in [0, 1], subtract the "
        "mean and divide by the std per channel.",
        "PIL.Image.fromarray, torchvision.transforms.functional.resize (with the config's interpolation), "
        ".crop, .to_tensor, .normalize; crossvit.preprocessing.interpolation_mode names the interpolation.",
    ),
    "top_predictions": (
        "Probabilities come from a softmax of the logits over the classes; the top k are the k largest.",
        "Softmax each row, take the k largest probabilities with their class indices, and pair each index's "
        "class name with its probability, best first.",
        "logits.softmax(dim=1), Tensor.topk(k, dim=1), names[index], float(probability).",
    ),
}

_given: dict[str, int] = {}


def solution_file(notebook: str) -> Path | None:
    """Where this copy of the course keeps the solutions of ``notebook``: ``solutions/<notebook>.py`` beside the
    notebooks (a notebook runs in its own folder) or ``notebooks/solutions/`` from the repository's root; None in
    the student edition, which has none."""
    for folder in (Path("solutions"), Path("notebooks") / "solutions"):
        if (folder / f"{notebook}.py").is_file():
            return folder / f"{notebook}.py"
    return None


def hint(exercise_id: str) -> str:
    """Print and return the next hint of an exercise, given by its number (``"4.1"``) or its function's name
    (``"rollout"``): the first call gives the first tier, each further call the next; after the last, where the
    solution is, if this copy of the course has the solutions."""
    ex = exercise(exercise_id)
    tiers = HINTS[ex.name]
    level = _given.get(ex.name, 0)
    if level < len(tiers):
        text = f"Hint {level + 1} of {len(tiers)} for exercise {ex.number} ({ex.name}): {tiers[level]}"
        _given[ex.name] = level + 1
    elif (path := solution_file(ex.notebook)) is not None:
        text = (f"No more hints for exercise {ex.number} ({ex.name}); the solution is the function {ex.name} in "
                f"{path.as_posix()} (`%load -s {ex.name} {path.as_posix()}`).")
    else:
        text = (f"No more hints for exercise {ex.number} ({ex.name}). This copy of the course holds no solutions: "
                "ask your teacher, or compare your function with a classmate's.")
    print(text)
    return text


def reset_hints() -> None:
    """Start every exercise's hints from the first tier again."""
    _given.clear()

