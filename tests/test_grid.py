"""The component grid: one order for parameters, rankings and patch masks."""

import pytest
import torch

import ascale
from ascale.errors import AscaleError, PromptLengthError
from ascale.grid import Grid


def test_grid_order_is_the_parameter_memory_order(tiny_gpt2):
    scalars = ascale.ActivationScalars(tiny_gpt2, sites="heads,mlp_out", positions=[1, -1], n_pos=6)
    for name, p in scalars.params.items():
        with torch.no_grad():
            p.copy_(
                torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape)
                + (100 if name == "mlp_out" else 0)
            )
    grid = Grid.of(scalars)
    flat = grid.from_params({n: p.detach() for n, p in scalars.params.items()})
    assert len(grid) == 2 * 2 * 4 + 2 * 2 == flat.numel()
    ranking = ascale.rank_components(scalars)
    by_name = ranking.components.set_index("component")["value"]
    assert [by_name[n] for n in grid.names] == flat.tolist()
    back = grid.to_params(flat)
    assert all(torch.equal(back[n], p.detach()) for n, p in scalars.params.items())
    assert list(grid.index.names) == ["site", "layer", "head", "pos"]
    assert grid.names[0] == "heads L0H0 @1" and grid.names[-1] == "mlp_out L1 @5"


def test_masks_mark_each_copy_at_its_components(tiny_gpt2):
    grid = Grid.build(tiny_gpt2, 5, sites="heads,attn_out", positions=[-1])
    rows = torch.zeros((2, len(grid)), dtype=torch.bool)
    rows[0, grid.names.index("heads L1H3 @4")] = True
    rows[1, grid.names.index("attn_out L0 @4")] = True
    masks = grid.masks(rows)
    assert set(masks) == {"blocks.1.attn.hook_z", "blocks.0.hook_attn_out"}
    z = masks["blocks.1.attn.hook_z"]
    assert z.shape == (2, 5, 4) and z.sum() == 1 and bool(z[0, 4, 3])
    a = masks["blocks.0.hook_attn_out"]
    assert a.shape == (2, 5) and a.sum() == 1 and bool(a[1, 4])


def test_shared_slot_masks_every_position(tiny_gpt2):
    grid = Grid.build(tiny_gpt2, 5, sites="mlp_out", positions="shared")
    assert grid.names == ("mlp_out L0", "mlp_out L1")
    with pytest.raises(AscaleError, match="with_length"):
        grid.masks(torch.ones((1, 2), dtype=torch.bool))
    masks = grid.with_length(5).masks(torch.tensor([[False, True]]))
    assert list(masks) == ["blocks.1.hook_mlp_out"] and bool(masks["blocks.1.hook_mlp_out"].all())


def test_bad_positions_and_sizes_are_refused(tiny_gpt2):
    with pytest.raises(PromptLengthError, match="do not exist"):
        Grid.build(tiny_gpt2, 5, sites="mlp_out", positions=[7])
    grid = Grid.build(tiny_gpt2, 5, sites="mlp_out")
    with pytest.raises(AscaleError, match="one per component"):
        grid.to_params(torch.zeros(3))
