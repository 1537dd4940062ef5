"""Edge-masked passes, EAP / EAP-IG and MIB's edge scoring (`ascale._tl._edges`,
`ascale.analysis.edges`). Tiny random models test the mechanics; SmolLM2 the real shapes."""

import json
from pathlib import Path

import pytest
import torch

from ascale._tl import _edges, _ungroup
from ascale.analysis.edge_results import CARRIED, MIB_CIRCUIT_FRACTIONS, EdgeAttributionResult
from ascale.analysis.edges import eap, eap_ig, score_edges
from ascale.data import ContrastSet
from ascale.errors import AscaleError
from ascale.graph import EdgeGraph, read_mib_json
from ascale.grid import FRACTIONS
from ascale.interventions import ABLATIONS
from ascale.loading import load_model
from ascale.testing import build_tiny, ioi_like_rows


@pytest.fixture(scope="module")
def gqa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny grouped-query Llama (4 query heads, 2 key/value heads) with random norm weights."""
    return build_tiny("llama_gqa", tmp_path_factory.mktemp("gqa"))


@pytest.fixture(scope="module")
def gqa(gqa_dir):
    return load_model(gqa_dir)


@pytest.fixture(scope="module")
def tiny_neox(tiny_dirs):
    return load_model(tiny_dirs["neox"])


@pytest.fixture(scope="module", params=["gpt2", "gqa", "neox"])
def case(request: pytest.FixtureRequest, tiny_gpt2, gqa, tiny_neox):
    """A tiny model (GPT-2; grouped-query Llama; NeoX, whose MLPs read the layer's input in
    parallel with attention), 6 IOI-like prompts of one length and their ABC corruption."""
    model = {"gpt2": tiny_gpt2, "gqa": gqa, "neox": tiny_neox}[request.param]
    clean_rows, corrupt_rows = ioi_like_rows(6, seed=1)
    data = ContrastSet.from_rows(clean_rows, model)
    return model, data, ContrastSet.from_rows(corrupt_rows, model)


def logit_diff(logits: torch.Tensor, data: ContrastSet) -> torch.Tensor:
    last = logits[:, -1]
    copies = len(last) // len(data)
    correct, wrong = data.correct_ids.repeat(copies), data.wrong_ids.repeat(copies)
    return last[torch.arange(len(last)), correct] - last[torch.arange(len(last)), wrong]


def test_ungrouped_copy_gives_the_models_logits(gqa, tiny_gpt2):
    assert _ungroup.is_grouped(gqa) and not _ungroup.is_grouped(tiny_gpt2)
    assert _ungroup.ungrouped(tiny_gpt2) is tiny_gpt2
    copy = _ungroup.ungrouped(gqa)
    assert copy is _ungroup.ungrouped(gqa)  # made once
    assert not _ungroup.is_grouped(copy) and copy.cfg.n_heads == 4
    tokens = torch.randint(0, 400, (3, 11), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.allclose(copy(tokens), gqa(tokens), atol=1e-5)
        shapes = []

        def look(act, hook):
            shapes.append(tuple(act.shape))
            return act

        with _ungroup.split_inputs(copy), copy.hooks(fwd_hooks=[("blocks.1.hook_k_input", look)]):
            copy(tokens)
    assert shapes == [(3, 11, 4, 32)]  # one key input per query head
    assert not copy.cfg.use_split_qkv_input  # switched on for the pass only


def test_every_edge_kept_is_clean_and_none_is_counterfactual(case):
    model, data, corrupted = case
    graph = EdgeGraph.of(model)
    ones, zeros = torch.ones(graph.n_edges), torch.zeros(graph.n_edges)
    with torch.inference_mode():
        corrupt = _edges.source_outputs(model, graph, corrupted.tokens)
        out = _edges.masked_run(
            model, graph, data.tokens, torch.stack([ones, zeros, ones]), corrupt, last_only=False
        )
        clean, bad = model(data.tokens), model(corrupted.tokens)
    n = len(data)
    assert (clean - bad).abs().max() > 0.1  # the corruption changes the logits
    torch.testing.assert_close(out[:n], clean, atol=1e-4, rtol=0)
    torch.testing.assert_close(out[n : 2 * n], bad, atol=1e-4, rtol=0)
    torch.testing.assert_close(out[2 * n :], clean, atol=1e-4, rtol=0)
    # the model's own hook settings are back as they were
    assert not model.cfg.use_split_qkv_input and not model.cfg.use_hook_mlp_in
    with torch.inference_mode():
        torch.testing.assert_close(model(data.tokens), clean, atol=0, rtol=0)


def test_the_plain_bridge_works_too(gqa_dir):
    """Without compatibility mode (no weight processing; the copy then has none either)."""
    model = load_model(gqa_dir, compatibility_mode=False)
    clean_rows, corrupt_rows = ioi_like_rows(4, seed=1)
    data, corrupted = (ContrastSet.from_rows(r, model) for r in (clean_rows, corrupt_rows))
    graph = EdgeGraph.of(model)
    keep = torch.stack([torch.ones(graph.n_edges), torch.zeros(graph.n_edges)])
    with torch.inference_mode():
        corrupt = _edges.source_outputs(model, graph, corrupted.tokens)
        out = _edges.masked_run(model, graph, data.tokens, keep, corrupt, last_only=False)
        clean, bad = model(data.tokens), model(corrupted.tokens)
    torch.testing.assert_close(out[:4], clean, atol=1e-4, rtol=0)
    torch.testing.assert_close(out[4:], bad, atol=1e-4, rtol=0)


def test_sparse_and_dense_products_agree(case):
    """Without autograd a pass multiplies only the sources some circuit keeps (or ablates);
    with it, every source: the two give the same logits on circuits of every size."""
    model, data, corrupted = case
    graph = EdgeGraph.of(model)
    gen = torch.Generator().manual_seed(0)
    keep = torch.stack([torch.rand(graph.n_edges, generator=gen) < p for p in (0.02, 0.3, 0.97)])
    keep = graph.prune(keep).float()
    with torch.inference_mode():
        corrupt = _edges.source_outputs(model, graph, corrupted.tokens)
        fast = _edges.masked_run(model, graph, data.tokens, keep, corrupt, last_only=False)
    with torch.enable_grad():
        dense = _edges.masked_run(model, graph, data.tokens, keep, corrupt.clone(), last_only=False)
    torch.testing.assert_close(fast, dense.detach(), atol=1e-4, rtol=0)


def test_one_edge_ablated_is_a_hand_made_patch(planted):
    """``input->logits`` and ``input->a1.h2<v>`` ablated alone equal TransformerLens hooks that
    add the input's (counterfactual - clean) embedding at that destination only."""
    model, data, corrupted = planted
    graph = EdgeGraph.of(model)
    with torch.inference_mode():
        corrupt = _edges.source_outputs(model, graph, corrupted.tokens)
        clean = _edges.source_outputs(model, graph, data.tokens)
    delta = corrupt[0] - clean[0]

    def at_logits(act, hook):
        return act + delta

    def at_value(act, hook):
        return torch.cat([act[:, :, :2], act[:, :, 2:3] + delta[:, :, None], act[:, :, 3:]], 2)

    for edge, hook, fn in [
        ("input->logits", "blocks.1.hook_resid_post", at_logits),
        ("input->a1.h2<v>", "blocks.1.hook_v_input", at_value),
    ]:
        keep = torch.ones(1, graph.n_edges)
        keep[0, graph.edge_ids[edge]] = 0
        with torch.inference_mode():
            got = _edges.masked_run(model, graph, data.tokens, keep, corrupt, last_only=False)
            with _ungroup.split_inputs(model), model.hooks(fwd_hooks=[(hook, fn)]):
                want = model(data.tokens)
            assert (want - model(data.tokens)).abs().max() > 0.1, edge
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_eap_is_the_gradient_of_a_mask_on_every_edge(case):
    """At keep = 1, ``input = live + Σ (1 - keep) · (corrupt - live)`` has derivative
    ``-(corrupt - clean) · ∂/∂input`` in each edge's keep: EAP's score with the opposite sign."""
    model, data, corrupted = case
    graph = EdgeGraph.of(model)
    scores = eap(model, data, corrupted, batch_size=4)  # two batches
    with torch.inference_mode():
        corrupt = _edges.source_outputs(model, graph, corrupted.tokens)
    assert scores.scores.abs().max() > 1e-3
    torch.testing.assert_close(
        scores.scores, _keep_gradient(model, graph, data, corrupt), atol=1e-5, rtol=1e-4
    )


def _keep_gradient(model, graph, data, sources):
    """``-∂(Σ logit diff)/∂keep`` at every edge kept, each ablated edge carrying `sources`."""
    keep = torch.ones(1, graph.n_edges, requires_grad=True)
    logits = _edges.masked_run(model, graph, data.tokens, keep, sources)
    (-logit_diff(logits, data).sum()).backward()
    return -keep.grad[0]


def test_eap_ig_on_the_input_edges_sums_to_the_total_effect(planted):
    """IG's completeness: the input's edges carry the whole gradient of the embedding, so with
    many steps their scores add up to ``Σ (m(clean) - m(corrupted))`` over the prompts (EAP,
    a one-point estimate, need not)."""
    model, data, corrupted = planted
    scores = eap_ig(model, data, corrupted, steps=40)
    graph = scores.graph
    with torch.inference_mode():
        total = (
            logit_diff(model(data.tokens), data) - logit_diff(model(corrupted.tokens), data)
        ).sum()
    from_input = scores.scores[graph.src_index == 0].sum()
    assert float(total) > 1.0  # the planted head answers
    assert float(from_input) == pytest.approx(float(total), rel=0.02)
    assert scores.info == {"steps": 40} and scores.method == "eap_ig"


def test_score_edges_recovers_the_planted_circuit_and_random_is_poor(planted):
    """The planted head's two edges (its values read the names, its output writes them) lead
    EAP-IG's ranking and make the whole circuit; random orders do not."""
    torch.manual_seed(0)
    model, data, corrupted = planted
    scores = eap_ig(model, data, corrupted)
    top = scores.to_frame()["edge"].tolist()[:2]
    assert sorted(top) == ["a1.h2->logits", "input->a1.h2<v>"]
    assert (scores.scores[[scores.graph.edge_ids[e] for e in top]] > 0).all()  # supports
    result = score_edges(model, data, corrupted, [scores], n_random=5, seed=0, max_batch=32)
    summary = result.summary()
    assert list(summary.index) == ["eap_ig", "random"]
    assert summary.loc["eap_ig", "cpr"] > 0.9 and summary.loc["eap_ig", "cmd"] < 0.05
    assert summary.loc["random", "cpr"] < 0.6 and summary.loc["random", "cmd"] > 0.4
    curve = result.curves[result.curves["method"] == "eap_ig"]
    assert curve["k"].tolist() == [int(p * 110) for p in curve["fraction"]]
    assert curve["f_signed"].iloc[-1] == 1.0 and (curve["n_signed"] <= curve["k"]).all()
    with torch.inference_mode():
        clean = logit_diff(model(data.tokens), data).mean()
        bad = logit_diff(model(corrupted.tokens), data).mean()
    assert result.m_clean == pytest.approx(float(clean), abs=1e-4)
    assert result.m_ablated == pytest.approx(float(bad), abs=1e-3)


def _mib_nodes(mib: dict) -> tuple[set[str], set[str]]:
    """The nodes with an ``in_graph`` edge out, and with one in, read off the file's edge names."""
    out, into = set(), set()
    for name, edge in mib["edges"].items():
        if edge["in_graph"]:
            src, dst = name.split("->")
            out.add(src)
            into.add(dst.split("<")[0])
    return out, into


@pytest.mark.parametrize("absolute", [False, True])
def test_binary_circuits_at_mibs_fractions_read_back_as_mib_marks_them(tmp_path, absolute):
    """MIB's binary circuit files: one per fraction (nine: MIB adds the whole graph), each
    marking the top int(p * N) edges pruned (ties in MIB's order, NaN last), its nodes those
    with an in_graph edge out and in (input: out), and read back to the same circuit."""
    graph = EdgeGraph(n_layers=6, n_heads=4, d_model=8)  # 1,108 edges: k >= 1 from p = 0.001
    scores = torch.randn(graph.n_edges, generator=torch.Generator().manual_seed(0)).round(
        decimals=1
    )  # ties
    scores[::97] = float("nan")
    planted = {"input->logits": 50, "input->a0.h0<q>": 45, "a0.h0->logits": 40, "input->m0": -60}
    for edge, score in {**planted, "m0->logits": -55}.items():  # paths at the top
        scores[graph.edge_ids[edge]] = score
    ranking = EdgeAttributionResult("eap", graph, scores)
    paths = ranking.write_mib_circuits(tmp_path / "eap")
    assert FRACTIONS[:-1] == MIB_CIRCUIT_FRACTIONS and len(paths) == 18
    folder = tmp_path / "eap" / f"abs-{absolute}"
    names = sorted(path.name for path in folder.iterdir())
    assert names == sorted(f"{p:g}.json" for p in MIB_CIRCUIT_FRACTIONS)
    values = scores.abs() if absolute else scores
    key = [float("inf") if v != v else -v for v in values.tolist()]
    order = sorted(range(graph.n_edges), key=key.__getitem__)  # stable: ties in MIB's order
    sizes = []
    for p in MIB_CIRCUIT_FRACTIONS:
        k = int(p * graph.n_edges)
        top = torch.zeros(graph.n_edges, dtype=torch.bool)
        top[order[:k]] = True
        back, read, in_graph = read_mib_json(folder / f"{p:g}.json")
        assert back == graph
        assert torch.equal(in_graph, graph.prune(top)), p  # the pruned top k
        assert torch.equal(in_graph, ranking.circuit(p, absolute=absolute))
        torch.testing.assert_close(read, scores, equal_nan=True)  # scores kept (EAP-IG reads them)
        sizes.append(int(in_graph.sum()))
        mib = json.loads((folder / f"{p:g}.json").read_text())
        out, into = _mib_nodes(mib)
        assert mib["nodes"]["logits"] == {"in_graph": True}
        assert mib["nodes"]["input"]["in_graph"] == ("input" in out)
        for node in graph.src_names[1:]:  # pruned: an edge out iff an edge in
            assert mib["nodes"][node]["in_graph"] == (node in out) == (node in into), (p, node)
    assert all(
        n <= int(p * graph.n_edges) for n, p in zip(sizes, MIB_CIRCUIT_FRACTIONS, strict=True)
    )
    assert sizes == sorted(sizes) and sizes[:3] == ([1, 1, 3] if not absolute else [0, 2, 5])
    with pytest.raises(AscaleError, match="fraction must lie in"):
        ranking.circuit(1.5)


def test_every_ablation_says_what_an_edge_carries():
    assert set(CARRIED) == set(ABLATIONS)


def test_bad_inputs_are_refused(tiny_gpt2):
    model = tiny_gpt2
    clean_rows, corrupt_rows = ioi_like_rows(4, seed=5)
    data, corrupted = (ContrastSet.from_rows(r, model) for r in (clean_rows, corrupt_rows))
    with pytest.raises(AscaleError, match="align"):
        eap(model, data, corrupted.subset([0, 1]))
    shuffled = corrupted.subset([1, 0, 2, 3])  # counterfactuals of other rows: other answers
    assert shuffled.correct != corrupted.correct
    for rank in (eap, eap_ig):
        with pytest.raises(AscaleError, match=r"row 0 .* has the correct answer"):
            rank(model, data, shuffled)
    with pytest.raises(AscaleError, match=r"row 0 .* has the correct answer"):
        score_edges(model, data, shuffled, {"x": torch.zeros(110)})
    with pytest.raises(AscaleError, match="holds no prompts"):
        eap(model, data.subset([]), None, ablation="mean")
    with pytest.raises(AscaleError, match="expected 110 edge scores, got \\(3,\\)"):
        score_edges(model, data, corrupted, {"x": torch.zeros(3)})
    with pytest.raises(AscaleError, match="steps must be a positive integer, got 0"):
        eap_ig(model, data, corrupted, steps=0)
    graph = EdgeGraph.of(model)
    with pytest.raises(AscaleError, match="expected 110 edge scores"):
        EdgeAttributionResult("x", graph, torch.zeros(5))


@pytest.mark.real
def test_smollm2_edges_reproduce_the_clean_and_counterfactual_runs(smol):
    import ascale

    graph = EdgeGraph.of(smol)
    assert (graph.n_edges, graph.n_src, graph.n_dst) == (123_211, 301, 841)
    data = ascale.tasks.ioi(smol, n=4, seed=0)
    corrupted = ascale.tasks.ioi_corrupt(data, smol, seed=0)
    keep = torch.stack([torch.ones(graph.n_edges), torch.zeros(graph.n_edges)])
    with torch.inference_mode():
        corrupt = _edges.source_outputs(smol, graph, corrupted.tokens)
        out = _edges.masked_run(smol, graph, data.tokens, keep, corrupt)
        clean = logit_diff(smol(data.tokens), data)
        bad = logit_diff(smol(corrupted.tokens), data)
    got = logit_diff(out, data)
    torch.testing.assert_close(got[: len(data)], clean, atol=1e-3, rtol=0)
    torch.testing.assert_close(got[len(data) :], bad, atol=1e-3, rtol=0)
    # EAP is the gradient of a mask on every edge here too (keys and values per query head)
    two, bad_two = data.subset([0, 1]), corrupted.subset([0, 1])
    scores = eap(smol, two, bad_two)
    keep = torch.ones(1, graph.n_edges, requires_grad=True)
    logits = _edges.masked_run(smol, graph, two.tokens, keep, corrupt[:, :2].clone())
    (-logit_diff(logits, two).sum()).backward()
    torch.testing.assert_close(scores.scores, -keep.grad[0], atol=1e-4, rtol=1e-4)


def test_mean_ablation_of_every_edge_is_the_mean_final_residual(case):
    """With every edge ablated to its source's mean, the logits read ``Σ mean sources`` plus
    what no source writes (biases, positions): the mean over prompts of the final residual.
    A hook that averages the last block's output over the batch computes that independently."""
    from ascale.passes import EdgeSources

    model, data, _ = case
    graph = EdgeGraph.of(model)
    name = f"blocks.{graph.n_layers - 1}.hook_resid_post"

    def mean_of_batch(act, hook):
        return act.mean(0, keepdim=True).expand_as(act)

    with torch.inference_mode():
        want = logit_diff(
            model.run_with_hooks(data.tokens, fwd_hooks=[(name, mean_of_batch)]), data
        )
        sources = EdgeSources(model, graph, data, None, "mean")
        none = torch.zeros(1, graph.n_edges)
        got = logit_diff(
            _edges.masked_run(model, graph, data.tokens, none, sources(list(range(len(data))))),
            data,
        )
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    result = score_edges(model, data, None, {}, ablation="mean", n_random=1)
    assert result.ablation == "mean"
    assert result.m_ablated == pytest.approx(float(want.mean()), abs=1e-4)


def test_eap_under_mean_and_zero_ablation_is_the_keep_masks_gradient(tiny_gpt2):
    from ascale.passes import EdgeSources

    clean_rows, _ = ioi_like_rows(6, seed=1)
    data = ContrastSet.from_rows(clean_rows, tiny_gpt2)
    graph = EdgeGraph.of(tiny_gpt2)
    for ablation in ("mean", "zero"):
        scores = eap(tiny_gpt2, data, ablation=ablation, batch_size=4)
        assert scores.info == {"ablation": ablation}
        sources = EdgeSources(tiny_gpt2, graph, data, None, ablation)(list(range(len(data))))
        assert scores.scores.abs().max() > 1e-3
        want = _keep_gradient(tiny_gpt2, graph, data, sources)
        torch.testing.assert_close(scores.scores, want, atol=1e-5, rtol=1e-4)


def test_edge_sources_refuse_what_they_cannot_ablate_to(tiny_gpt2):
    from ascale.passes import EdgeSources

    clean_rows, _ = ioi_like_rows(6, seed=1)
    data = ContrastSet.from_rows(clean_rows, tiny_gpt2)
    graph = EdgeGraph.of(tiny_gpt2)
    with pytest.raises(AscaleError, match="needs each prompt's counterfactual"):
        EdgeSources(tiny_gpt2, graph, data, None, "counterfactual")
    with pytest.raises(AscaleError, match="ablation must be one of counterfactual, mean, zero"):
        EdgeSources(tiny_gpt2, graph, data, None, "resample")
    zero = EdgeSources(tiny_gpt2, graph, data, None, "zero")([0, 2])
    assert zero.shape == (graph.n_src, 2, data.tokens.shape[1], graph.d_model)
    assert not zero.any()
