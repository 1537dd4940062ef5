"""`EdgeGraph`: MIB's names, order and counts, pruning, and MIB's graph file."""

import json

import pytest
import torch

from ascale.errors import AscaleError, SavedFileError
from ascale.graph import EdgeGraph, read_mib_json


def mib_count(n_layers: int, n_heads: int) -> int:
    """The edge count of MIB's graph (CIRCUITS.md's formula)."""
    h = n_heads
    per_layer = sum(3 * h * (1 + i * (h + 1)) + 1 + i * (h + 1) + h for i in range(n_layers))
    return per_layer + 1 + n_layers * (h + 1)


def mib_edges(n_layers: int, n_heads: int, parallel: bool) -> list[str]:
    """Edge names in the insertion order of EAP-IG's ``Graph.from_model`` (rewritten here)."""
    edges, stream = [], ["input"]
    for layer in range(n_layers):
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        mlp = f"m{layer}"
        for node in stream:
            edges += [f"{node}->{a}<{x}>" for a in heads for x in "qkv"]
            if parallel:
                edges.append(f"{node}->{mlp}")
        if not parallel:
            edges += [f"{node}->{mlp}" for node in [*stream, *heads]]
        stream += [*heads, mlp]
    return edges + [f"{node}->logits" for node in stream]


def test_counts_match_mib_for_gpt2_small_and_smollm2():
    gpt2 = EdgeGraph(n_layers=12, n_heads=12, d_model=768)
    smol = EdgeGraph(n_layers=30, n_heads=9, d_model=576)
    assert gpt2.n_edges == 32_491 == mib_count(12, 12)
    assert (smol.n_edges, smol.n_src, smol.n_dst) == (123_211, 301, 841)
    assert len(smol.node_names) == 302
    assert len(set(smol.edges)) == smol.n_edges


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize(("n_layers", "n_heads"), [(1, 1), (2, 3), (3, 2)])
def test_edge_names_and_order_are_mibs(n_layers, n_heads, parallel):
    graph = EdgeGraph(n_layers=n_layers, n_heads=n_heads, d_model=8, parallel_attn_mlp=parallel)
    assert list(graph.edges) == mib_edges(n_layers, n_heads, parallel)
    # the index form names the same edges
    for i in (0, graph.n_edges // 2, graph.n_edges - 1):
        src, dst = graph.edges[i].split("->")
        assert graph.src_names[graph.src_index[i]] == src
        assert graph.dst_names[graph.dst_index[i]] == dst


def test_who_reads_whom():
    graph = EdgeGraph(n_layers=12, n_heads=12, d_model=768)
    ids = graph.edge_ids
    for edge in ("a3.h2->a7.h1<k>", "m4->m9", "input->logits", "a3.h2->m3", "m11->logits"):
        assert edge in ids
    for edge in ("m9->m4", "a7.h1->a3.h2<k>", "a3.h2->a3.h1<q>", "m3->a3.h0<v>", "m3->m3"):
        assert edge not in ids
    parallel = EdgeGraph(n_layers=12, n_heads=12, d_model=768, parallel_attn_mlp=True)
    assert "a3.h2->m3" not in parallel.edge_ids and "a2.h2->m3" in parallel.edge_ids


def test_dense_and_sparse_invert():
    graph = EdgeGraph(n_layers=3, n_heads=2, d_model=8)
    values = torch.randn(2, graph.n_edges, generator=torch.Generator().manual_seed(0))
    dense = graph.dense(values)
    assert dense.shape == (2, graph.n_src, graph.n_dst)
    assert torch.equal(graph.sparse(dense), values)
    assert int((dense != 0).sum()) == 2 * graph.n_edges  # nothing off the edges
    # the destinations read a prefix of the sources, as the forward pass slices them
    real = graph.dense(torch.ones(graph.n_edges))
    for dst in range(graph.n_dst):
        n = graph.reads(dst)
        assert bool(real[:n, dst].all()) and not bool(real[n:, dst].any())


def test_prune_by_hand():
    graph = EdgeGraph(n_layers=2, n_heads=2, d_model=4)

    def kept(*names: str) -> torch.Tensor:
        mask = torch.zeros(graph.n_edges, dtype=torch.bool)
        mask[[graph.edge_ids[n] for n in names]] = True
        return mask

    def names(mask: torch.Tensor) -> set[str]:
        return {graph.edges[i] for i in mask.nonzero().flatten().tolist()}

    # a chain that never reaches the logits dies from its end back to the input
    assert names(graph.prune(kept("input->a0.h0<q>", "a0.h0->m1"))) == set()
    # a node with no edge in loses its edges out; the input needs none
    circuit = kept("a1.h0->logits", "input->logits", "input->m0", "m0->a1.h1<k>", "a1.h1->logits")
    assert names(graph.prune(circuit)) == {
        "input->logits",
        "input->m0",
        "m0->a1.h1<k>",  # a head fed through its key alone stays
        "a1.h1->logits",
    }
    # a fixed point: pruning twice changes nothing; circuits stacked prune one by one
    both = torch.stack([circuit, kept("input->a0.h0<q>", "a0.h0->m1")])
    once = graph.prune(both)
    assert torch.equal(graph.prune(once), once)
    assert torch.equal(once[0], graph.prune(circuit))


def _mib_prune(graph: EdgeGraph, kept: torch.Tensor) -> torch.Tensor:
    """EAP-IG's ``Graph.prune`` on its [src, dst] matrices (rewritten here)."""
    in_graph = graph.dense(kept.float()) > 0
    f2b = torch.zeros(graph.n_src, graph.n_dst, dtype=torch.bool)
    for dst, node in enumerate(graph.dst_node.tolist()):
        if node >= 0:
            f2b[node, dst] = True
    while True:
        with_out = in_graph.any(1)
        with_in = (in_graph.any(0).float() @ f2b.float().T) > 0
        with_in[0] = True
        nodes = with_out & with_in
        backward = (nodes.float() @ f2b.float()) > 0
        backward[-1] = True
        new = in_graph & nodes[:, None] & backward[None, :]
        if torch.equal(new, in_graph):
            return graph.sparse(new)
        in_graph = new


def test_prune_matches_mibs_on_random_circuits():
    graph = EdgeGraph(n_layers=3, n_heads=3, d_model=4)
    gen = torch.Generator().manual_seed(0)
    for p in (0.05, 0.2, 0.5, 0.9):
        kept = torch.rand(graph.n_edges, generator=gen) < p
        assert torch.equal(graph.prune(kept), _mib_prune(graph, kept))


def test_mib_json_round_trip_is_exact(tmp_path):
    graph = EdgeGraph(n_layers=3, n_heads=2, d_model=16)
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(graph.n_edges, generator=gen) * 1e-3
    kept = graph.prune(torch.rand(graph.n_edges, generator=gen) < 0.3)
    mib = graph.to_mib_json(scores, kept)
    assert list(mib) == ["cfg", "nodes", "edges"]
    assert mib["cfg"] == {"n_layers": 3, "n_heads": 2, "parallel_attn_mlp": False, "d_model": 16}
    assert list(mib["nodes"]) == list(graph.node_names)
    assert list(mib["edges"]) == list(graph.edges)
    assert mib["nodes"]["logits"] == {"in_graph": True}
    alive = graph.nodes_in(kept)
    assert [mib["nodes"][n]["in_graph"] for n in graph.src_names] == alive.tolist()
    path = tmp_path / "graph.json"
    graph.write_mib_json(path, scores, kept)
    for source in (json.loads(json.dumps(mib)), path):
        back, read, in_graph = read_mib_json(source)
        assert back == graph
        assert read.dtype == torch.float32 and torch.equal(read, scores)
        assert torch.equal(in_graph, kept)


def test_mib_json_refuses_bad_files():
    graph = EdgeGraph(n_layers=1, n_heads=2, d_model=4)
    mib = graph.to_mib_json(torch.zeros(graph.n_edges))
    wrong = dict(mib, edges={**mib["edges"], "m0->a0.h0<q>": {"score": 0.0, "in_graph": False}})
    with pytest.raises(SavedFileError, match=r"m0->a0\.h0<q>"):
        read_mib_json(wrong)
    short = dict(mib, edges=dict(list(mib["edges"].items())[1:]))
    with pytest.raises(SavedFileError, match="misses 1 edges"):
        read_mib_json(short)
    with pytest.raises(SavedFileError, match="n_heads"):
        read_mib_json({"cfg": {"n_layers": 1, "d_model": 4}, "nodes": {}, "edges": {}})
    with pytest.raises(AscaleError, match="one value per edge"):
        graph.to_mib_json(torch.zeros(3))
    with pytest.raises(AscaleError, match="n_heads must be a positive integer, got 0"):
        EdgeGraph(n_layers=1, n_heads=0, d_model=4)
