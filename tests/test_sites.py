import pytest

from ascale.errors import UnknownSiteError
from ascale.sites import Site, resolve_sites


def test_site_names_resolve_to_hook_points(tiny):
    sites = resolve_sites(tiny, "attn_out, mlp_out,heads,resid")
    assert [s.name for s in sites] == ["attn_out", "mlp_out", "heads", "resid"]
    n_layers = tiny.cfg.n_layers
    assert all(s.layers == tuple(range(n_layers)) for s in sites)
    for site in sites:
        for layer in site.layers:
            assert site.hook_name(layer) in tiny.hook_dict


def test_hook_names_and_negative_layers(tiny):
    last = tiny.cfg.n_layers - 1
    sites = resolve_sites(tiny, ["blocks.0.hook_mlp_out", "attn_out"], layers=[-1])
    assert sites == (Site("mlp_out", (0,)), Site("attn_out", (last,)))
    assert sites[1].hook_name(last) == f"blocks.{last}.hook_attn_out"


def test_unknown_site_names_the_closest(tiny):
    with pytest.raises(UnknownSiteError, match="attn_out"):
        resolve_sites(tiny, "atn_out")
    with pytest.raises(UnknownSiteError, match=r"blocks\.0\.hook_mlp_out"):
        resolve_sites(tiny, "blocks.0.hook_mlp_outt")


def test_unknown_layer_is_refused(tiny):
    with pytest.raises(UnknownSiteError, match="layer 7 does not exist"):
        resolve_sites(tiny, "attn_out", layers=[7])


def test_str_is_compact():
    assert str(Site("heads", (0, 1, 2, 5))) == "heads[0-2,5]"
