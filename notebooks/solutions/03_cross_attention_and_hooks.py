"""Solutions to the exercises of notebook 03 (cross-attention and hooks), one function per exercise.

Load one into a cell with ``%load -s <function> solutions/03_cross_attention_and_hooks.py``.
"""

import torch

import crossvit


# Exercise 3.1 · record_with_hooks
def record_with_hooks(model: torch.nn.Module, images: torch.Tensor, kind: str = "cross"
                      ) -> dict[str, torch.Tensor]:
    """Every ``kind`` attention map of one forward pass, by site name, recorded with plain forward hooks."""
    maps = {}
    handles = []

    def make_hook(name):  # binds `name` now; a closure over the loop variable would see only the last name
        def hook(module, inputs, output):
            maps[name] = output.detach()
        return hook

    try:
        for site in crossvit.attention_sites(model):
            if site.kind == kind:
                handles.append(site.module.register_forward_hook(make_hook(site.name)))
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:  # otherwise those sites would stay on the slow explicit path forever
            handle.remove()
    return maps


# Exercise 3.2 · fusion_direction
def fusion_direction(fusion: torch.nn.Module, cls: torch.Tensor, other_patches: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """One paper-flavour fusion direction: (attention (B, heads, 1, 1 + N_other), new CLS (B, 1, D_query))."""
    attn = fusion.attn
    b = cls.shape[0]
    z = fusion.project_in(cls)  # (B, 1, D_other): the CLS in the other branch's width
    context = fusion.norm(torch.cat((z, other_patches), dim=1))  # (B, 1 + N_other, D_other)

    def heads(t):  # (B, N, heads * dim_head) -> (B, heads, N, dim_head)
        return t.reshape(b, t.shape[1], attn.heads, attn.dim_head).transpose(1, 2)

    q = heads(attn.to_q(context[:, :1]))  # the CLS is the only query
    k, v = (heads(t) for t in attn.to_kv(context).chunk(2, dim=-1))
    attention = (q @ k.transpose(-2, -1) * attn.dim_head ** -0.5).softmax(dim=-1)  # (B, heads, 1, 1 + N_other)
    mixed = (attention @ v).transpose(1, 2).reshape(b, 1, attn.heads * attn.dim_head)
    new_cls = fusion.project_out(z + attn.to_out(mixed))  # residual in the other width, then back to ours
    return attention, new_cls
