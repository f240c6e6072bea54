"""The CLIP2Scene losses (Eq. 1-4, S3, KL) against hand computations with plain Python math."""
from __future__ import annotations

import math

import pytest
import torch

from clip2scene_core.train.losses import (
    LossConfig,
    aligned_point_labels,
    cosine_logits,
    fuse_cell_features,
    grid_cell_ids,
    kl_distillation_loss,
    pretraining_loss,
    pseudo_labels,
    semantic_consistency_loss,
    semantic_cross_entropy_loss,
    spatial_temporal_consistency_loss,
    switchable_self_training_targets,
    total_loss,
)


def unit(v):
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def cos(a, b):
    return dot(unit(a), unit(b))


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


# Tiny fixed case: 5 points, 3 classes (class 2 absent), D = 3.
POINTS = [[1.0, 0.2, 0.0], [0.5, 1.0, 0.3], [0.9, -0.1, 0.4], [0.0, 2.0, 0.1], [-0.3, 0.2, 1.0]]
TEXT = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
TARGETS = [0, 1, 0, 1, 1]


def eq1_by_hand(points, text, targets, tau, denominator, reduction):
    terms = []
    for c in range(len(text)):
        pos = [math.exp(cos(text[c], p) / tau) for p, y in zip(points, targets) if y == c]
        neg = [math.exp(cos(text[c], p) / tau) for p, y in zip(points, targets) if y != c]
        if not pos or (denominator == "negatives" and not neg):
            continue
        denom = sum(neg) + (sum(pos) if denominator == "all" else 0.0)
        terms.append(-math.log(sum(pos) / denom))
    return sum(terms) if reduction == "sum" else sum(terms) / len(terms)


def tensors(points=POINTS, text=TEXT, targets=TARGETS):
    return (
        torch.tensor(points, dtype=torch.float64, requires_grad=True),
        torch.tensor(text, dtype=torch.float64),
        torch.tensor(targets, dtype=torch.int64),
    )


def test_pseudo_labels_pick_the_nearest_text_by_cosine():
    p, t, _ = tensors()
    labels = pseudo_labels(p, t)
    expected = [max(range(3), key=lambda c: cos(q, TEXT[c])) for q in POINTS]
    assert labels.tolist() == expected
    assert labels.dtype == torch.int64


def test_cosine_logits_ignore_feature_scale():
    p, t, _ = tensors()
    assert torch.allclose(cosine_logits(p * 7.0, t, 0.5), cosine_logits(p, t, 0.5))
    assert cosine_logits(p, t, 0.5)[0, 0].item() == pytest.approx(cos(POINTS[0], TEXT[0]) / 0.5, rel=1e-6)


@pytest.mark.parametrize("denominator", ["negatives", "all"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_semantic_consistency_loss_matches_eq1_by_hand(denominator, reduction):
    p, t, y = tensors()
    loss = semantic_consistency_loss(p, t, y, 0.5, denominator, reduction)
    expected = eq1_by_hand(POINTS, TEXT, TARGETS, 0.5, denominator, reduction)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_semantic_consistency_denominator_option_changes_the_loss():
    p, t, y = tensors()
    negatives = semantic_consistency_loss(p, t, y, denominator="negatives")
    everything = semantic_consistency_loss(p, t, y, denominator="all")
    assert everything.item() > negatives.item()  # adding positives grows every denominator
    assert everything.item() > 0.0


def test_semantic_consistency_loss_is_independent_of_point_order():
    p, t, y = tensors()
    order = torch.tensor([3, 0, 4, 2, 1])
    a = semantic_consistency_loss(p, t, y)
    b = semantic_consistency_loss(p[order], t, y[order])
    assert a.item() == pytest.approx(b.item(), rel=1e-12)


def test_semantic_consistency_single_class_batch_has_no_negatives_term():
    p, t, _ = tensors()
    y = torch.zeros(5, dtype=torch.int64)
    loss = semantic_consistency_loss(p, t, y, denominator="negatives")
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(p.grad == 0)
    assert semantic_consistency_loss(p, t, y, denominator="all").item() == pytest.approx(0.0, abs=1e-12)


def test_semantic_consistency_gradient_is_finite_and_pulls_points_to_their_class():
    p, t, y = tensors()
    loss = semantic_consistency_loss(p, t, y)
    loss.backward()
    assert torch.isfinite(p.grad).all()
    stepped = (p - 0.05 * p.grad).detach()
    assert semantic_consistency_loss(stepped, t, y).item() < loss.item()
    before = cosine_logits(p.detach(), t)[torch.arange(5), y]
    after = cosine_logits(stepped, t)[torch.arange(5), y]
    assert (after > before).all()


def test_semantic_consistency_is_stable_at_tiny_temperature():
    p, t, y = tensors()
    loss = semantic_consistency_loss(p.float(), t.float(), y, temperature=1e-3)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(p.grad).all()


def test_semantic_consistency_rejects_labels_outside_the_class_range():
    p, t, _ = tensors()
    with pytest.raises(ValueError, match="targets"):
        semantic_consistency_loss(p, t, torch.tensor([0, 1, 3, 0, 1]))
    with pytest.raises(ValueError, match="denominator"):
        semantic_consistency_loss(p, t, torch.tensor(TARGETS), denominator="positives")


def test_semantic_cross_entropy_variant_uses_unnormalised_point_logits():
    p, t, y = tensors()
    loss = semantic_cross_entropy_loss(p, t, y, temperature=0.5)
    expected = 0.0
    for q, target in zip(POINTS, TARGETS):
        logits = [dot(q, unit(c)) / 0.5 for c in TEXT]
        expected += -logits[target] + math.log(sum(math.exp(v) for v in logits))
    assert loss.item() == pytest.approx(expected / 5, rel=1e-6)
    # Scale matters for CE on raw logits, never for the cosine InfoNCE of Eq. 1.
    assert semantic_cross_entropy_loss(p * 3, t, y).item() != pytest.approx(
        semantic_cross_entropy_loss(p, t, y).item()
    )
    assert semantic_consistency_loss(p * 3, t, y).item() == pytest.approx(
        semantic_consistency_loss(p, t, y).item(), rel=1e-9
    )


def test_grid_cell_ids_group_points_by_cell_and_sample():
    points = torch.tensor(
        [[0.01, 0.02, 0.03], [0.09, 0.05, 0.01], [0.11, 0.0, 0.0], [-0.01, 0.0, 0.0], [0.05, 0.05, 0.05]]
    )
    ids = grid_cell_ids(points, 0.1).tolist()
    assert ids[0] == ids[1] == ids[4]
    assert len({ids[0], ids[2], ids[3]}) == 3  # floor: -0.01 is in cell -1, 0.11 in cell 1
    assert sorted(set(ids)) == [0, 1, 2]
    split = grid_cell_ids(points, 0.1, batch=torch.tensor([0, 1, 0, 0, 0])).tolist()
    assert split[0] != split[1] and split[0] == split[4]
    with pytest.raises(ValueError, match="points"):
        grid_cell_ids(torch.zeros(4, 2), 0.1)


# Eq. 2-4 case: 4 pairs in 2 cells (ids 7 and 3), D = 2.
PIX = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, -0.6]]
PTS = [[0.9, 0.3], [0.2, 1.0], [-0.5, 1.0], [1.0, 0.1]]
T1 = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
CELLS = [7, 7, 3, 3]


def eq2_by_hand(lam, points_only):
    loss = 0.0
    for cell in set(CELLS):
        members = [i for i, c in enumerate(CELLS) if c == cell]
        weighted = []  # (weight, feature)
        for i in members:
            if not points_only:
                weighted.append((math.exp(cos(PIX[i], T1[i]) / lam), unit(PIX[i])))
            weighted.append((math.exp(cos(PTS[i], T1[i]) / lam), unit(PTS[i])))
        total = sum(w for w, _ in weighted)
        fused = [sum(w * f[d] for w, f in weighted) / total for d in range(2)]
        loss += sum(1.0 - sigmoid(cos(PTS[i], fused)) for i in members)
    return loss / len(CELLS)


def eq2_tensors():
    return (
        torch.tensor(PIX, dtype=torch.float64, requires_grad=True),
        torch.tensor(PTS, dtype=torch.float64, requires_grad=True),
        torch.tensor(T1, dtype=torch.float64),
        torch.tensor(CELLS),
    )


@pytest.mark.parametrize("lam", [1.0, 0.3])
@pytest.mark.parametrize("fusion", ["pixels_and_points", "points_only"])
def test_spatial_temporal_consistency_loss_matches_eq2_to_4_by_hand(lam, fusion):
    x, p, t1, cells = eq2_tensors()
    loss = spatial_temporal_consistency_loss(x, p, t1, cells, lam=lam, fusion=fusion)
    assert loss.item() == pytest.approx(eq2_by_hand(lam, fusion == "points_only"), rel=1e-6)


def test_fusion_weights_sum_to_one_per_cell():
    x, p, t1, cells = eq2_tensors()
    fused, index = fuse_cell_features(x, p, t1 * 0, cells)  # t^1 = 0: equal weights
    assert index.tolist() == [1, 1, 0, 0]  # ascending cell id order
    normalise = torch.nn.functional.normalize
    mean_7 = (normalise(x[:2], dim=1).sum(0) + normalise(p[:2], dim=1).sum(0)) / 4
    assert torch.allclose(fused[1], mean_7, atol=1e-12)


def test_fusion_option_changes_the_loss():
    x, p, t1, cells = eq2_tensors()
    paper = spatial_temporal_consistency_loss(x, p, t1, cells)
    public = spatial_temporal_consistency_loss(x, p, t1, cells, fusion="points_only")
    assert paper.item() != pytest.approx(public.item(), rel=1e-6)


def test_spatial_temporal_loss_is_invariant_to_cell_labels_and_pair_order():
    x, p, t1, cells = eq2_tensors()
    reference = spatial_temporal_consistency_loss(x, p, t1, cells).item()
    relabelled = torch.tensor([10**12, 10**12, -5, -5])
    relabelled_loss = spatial_temporal_consistency_loss(x, p, t1, relabelled).item()
    assert relabelled_loss == pytest.approx(reference, rel=1e-12)
    order = torch.tensor([2, 0, 3, 1])
    shuffled = spatial_temporal_consistency_loss(x[order], p[order], t1[order], cells[order]).item()
    assert shuffled == pytest.approx(reference, rel=1e-12)


def test_stop_gradient_keeps_the_value_and_cuts_the_fused_path():
    x, p, t1, cells = eq2_tensors()
    free = spatial_temporal_consistency_loss(x, p, t1, cells)
    free.backward()
    assert x.grad.abs().sum() > 0  # pixels reach the loss only through f_n
    x2, p2, _, _ = eq2_tensors()
    stopped = spatial_temporal_consistency_loss(x2, p2, t1, cells, stop_gradient=True)
    assert stopped.item() == pytest.approx(free.item(), rel=1e-12)
    stopped.backward()
    assert x2.grad is None or torch.all(x2.grad == 0)
    assert not torch.allclose(p2.grad, p.grad)


def test_spatial_temporal_gradient_step_pulls_points_to_their_cell():
    x, p, t1, cells = eq2_tensors()
    loss = spatial_temporal_consistency_loss(x, p, t1, cells, stop_gradient=True)
    loss.backward()
    assert torch.isfinite(p.grad).all()
    stepped = (p - 1.0 * p.grad).detach()
    assert spatial_temporal_consistency_loss(x.detach(), stepped, t1, cells).item() < loss.item()


def test_spatial_temporal_loss_is_stable_at_tiny_lambda():
    x, p, t1, cells = eq2_tensors()
    loss = spatial_temporal_consistency_loss(x.float(), p.float(), t1.float(), cells, lam=1e-4)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(p.grad).all() and torch.isfinite(x.grad).all()


def test_spatial_temporal_loss_of_a_single_pair_cell():
    x = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.0, 2.0]])
    t1 = torch.tensor([[1.0, 0.0]])
    loss = spatial_temporal_consistency_loss(x, p, t1, torch.tensor([0]))
    a, b = math.exp(1.0), math.exp(0.0)
    fused = [a / (a + b), b / (a + b)]
    assert loss.item() == pytest.approx(1 - sigmoid(cos([0.0, 1.0], fused)), rel=1e-6)


def test_switchable_self_training_uses_pixel_labels_before_start_without_drawing():
    pixel, point = torch.tensor([0, 1, 2]), torch.tensor([2, 2, 2])
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    for epoch in range(10):
        assert switchable_self_training_targets(pixel, point, epoch, 10, generator) is pixel
    assert torch.equal(generator.get_state(), state)


def test_switchable_self_training_flips_a_seeded_coin_after_start():
    pixel, point = torch.tensor([0, 1, 2]), torch.tensor([2, 2, 2])
    generator = torch.Generator().manual_seed(5)
    reference = torch.Generator().manual_seed(5)
    picks = []
    for _ in range(200):
        chosen = switchable_self_training_targets(pixel, point, 10, 10, generator)
        expected_points = bool(torch.rand((), generator=reference) < 0.5)
        assert (chosen is point) == expected_points
        picks.append(chosen is point)
    assert 60 < sum(picks) < 140
    assert switchable_self_training_targets(pixel, point, 12, 10, generator, 1.0) is point
    assert switchable_self_training_targets(pixel, point, 12, 10, generator, 0.0) is pixel


def test_kl_distillation_loss_matches_hand_computation():
    student = [[1.0, 0.0, -1.0], [0.2, 0.4, 0.1]]
    teacher = [[0.0, 2.0, 0.5], [0.3, 0.3, 0.3]]
    temperature = 2.0

    def softmax(v):
        e = [math.exp(x / temperature) for x in v]
        return [x / sum(e) for x in e]

    expected = 0.0
    for s, t in zip(student, teacher):
        ps, pt = softmax(s), softmax(t)
        expected += sum(b * math.log(b / a) for a, b in zip(ps, pt))
    expected = expected / 2 * temperature**2
    s = torch.tensor(student, requires_grad=True)
    tt = torch.tensor(teacher, requires_grad=True)
    loss = kl_distillation_loss(s, tt, temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert s.grad.abs().sum() > 0 and tt.grad is None
    assert kl_distillation_loss(tt.detach(), tt.detach()).item() == pytest.approx(0.0, abs=1e-7)


def test_loss_config_rejects_unknown_options():
    with pytest.raises(ValueError, match="tau"):
        LossConfig.from_dict({"tau": 0.5})
    with pytest.raises(ValueError, match="fusion"):
        LossConfig(fusion="pixels")
    assert LossConfig.from_dict({"fusion": "points_only"}).fusion == "points_only"


def test_total_loss_weights_each_term():
    config = LossConfig(semantic_weight=2.0, spatial_temporal_weight=0.5)
    assert total_loss(torch.tensor(3.0), torch.tensor(4.0), config).item() == pytest.approx(8.0)
    assert total_loss(torch.tensor(3.0), torch.tensor(4.0)).item() == pytest.approx(7.0)


def random_batch(seed=0, pairs=64, classes=4, dim=8):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(pairs, dim, generator=g),
        torch.randn(pairs, dim, generator=g, requires_grad=True),
        torch.randn(pairs, dim, generator=g, requires_grad=True),
        torch.nn.functional.normalize(torch.randn(classes, dim, generator=g), dim=1),
        torch.randint(0, 10, (pairs,), generator=g),
    )


def test_pretraining_loss_is_the_weighted_sum_of_eq1_and_eq2():
    x, ps, pc, text, cells = random_batch()
    out = pretraining_loss(x, ps, pc, text, cells)
    labels = pseudo_labels(x, text)
    assert torch.equal(out["pseudo_labels"], labels)
    semantic = semantic_consistency_loss(ps, text, labels)
    spatial = spatial_temporal_consistency_loss(x, pc, text[labels], cells)
    assert out["total"].item() == pytest.approx((semantic + spatial).item(), rel=1e-6)
    out["total"].backward()
    assert torch.isfinite(ps.grad).all() and torch.isfinite(pc.grad).all()
    targets = torch.zeros_like(labels)
    ce = pretraining_loss(x, ps, pc, text, cells, targets, LossConfig(semantic_loss="ce"))
    assert ce["semantic"].item() == pytest.approx(semantic_cross_entropy_loss(ps, text, targets, 0.5).item())


def test_losses_return_float32_for_half_inputs():
    x, ps, pc, text, cells = random_batch()
    out = pretraining_loss(x.half(), ps.detach().half(), pc.detach().half(), text.half(), cells)
    assert out["total"].dtype == torch.float32 and torch.isfinite(out["total"])


def test_losses_of_an_empty_batch_are_zero():
    empty = torch.zeros(0, 4, requires_grad=True)
    text = torch.eye(4)
    labels = torch.zeros(0, dtype=torch.int64)
    assert semantic_consistency_loss(empty, text, labels).item() == 0.0
    assert spatial_temporal_consistency_loss(empty, empty, empty, labels).item() == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_losses_agree_on_cuda():
    x, ps, pc, text, cells = random_batch()
    cpu = pretraining_loss(x, ps, pc, text, cells)
    gpu = pretraining_loss(*(v.detach().cuda() for v in (x, ps, pc, text, cells)))
    for key in ("semantic", "spatial_temporal"):
        assert gpu[key].item() == pytest.approx(cpu[key].item(), rel=1e-4)


def test_vectorised_fusion_matches_a_loop_over_cells():
    g = torch.Generator().manual_seed(1)
    x, p, t1 = (torch.randn(50, 6, generator=g, dtype=torch.float64) for _ in range(3))
    cells = torch.randint(0, 7, (50,), generator=g) * 13
    normalise = torch.nn.functional.normalize
    expected = 0.0
    for cell in cells.unique():
        members = cells == cell
        xs, ps, ts = normalise(x[members], dim=1), normalise(p[members], dim=1), normalise(t1[members], dim=1)
        a, b = torch.exp((xs * ts).sum(1) / 0.7), torch.exp((ps * ts).sum(1) / 0.7)
        fused = ((a[:, None] * xs).sum(0) + (b[:, None] * ps).sum(0)) / (a.sum() + b.sum())
        expected += (1 - torch.sigmoid(torch.cosine_similarity(ps, fused[None], dim=1))).sum().item()
    loss = spatial_temporal_consistency_loss(x, p, t1, cells, lam=0.7)
    assert loss.item() == pytest.approx(expected / 50, rel=1e-10)


@pytest.mark.parametrize("fusion", ["pixels_and_points", "points_only"])
@pytest.mark.parametrize("stop_gradient", [False, True])
def test_factored_head_outputs_give_the_dense_losses_and_gradients(fusion, stop_gradient):
    """Pretraining passes the heads' outputs factored (p = W h + b): every loss and every gradient
    (inputs, weight, bias) must equal those of the (M, D) tensor it stands for."""
    from clip2scene_core.model.heads import ProjectedFeatures

    generator = torch.Generator().manual_seed(0)
    rows, width, dim, classes = 300, 6, 20, 5
    pixels = torch.randn(rows, dim, dtype=torch.float64, generator=generator)
    text = torch.randn(classes, dim, dtype=torch.float64, generator=generator)
    labels = torch.randint(0, classes, (rows,), generator=generator)
    cells = torch.randint(0, 40, (rows,), generator=generator)
    values = [torch.randn(shape, dtype=torch.float64, generator=generator) for shape in ((rows, width), (dim, width), (dim,))]
    objectives = {
        "Eq. 2-4": lambda p: spatial_temporal_consistency_loss(pixels, p, text[labels], cells, 0.2, stop_gradient, fusion),
        "Eq. 1": lambda p: semantic_consistency_loss(p, text, labels),
        "ce": lambda p: semantic_cross_entropy_loss(p, text, labels, 0.5),
        "logits": lambda p: cosine_logits(p, text, 0.5).square().sum(),
    }
    for name, objective in objectives.items():
        results = []
        for factored in (False, True):
            h, weight, bias = (value.clone().requires_grad_() for value in values)
            features = ProjectedFeatures(h, weight, bias) if factored else torch.nn.functional.linear(h, weight, bias)
            loss = objective(features)
            loss.backward()
            results.append((loss.detach(), h.grad, weight.grad, bias.grad))
        for dense, factored in zip(*results):
            torch.testing.assert_close(factored, dense, rtol=1e-9, atol=1e-12, msg=name)


def test_aligned_point_labels_undo_a_class_the_points_over_predict():
    # Points of classes 0 and 1 (half each) whose features all lean towards class 0: the argmax
    # labels nearly every point 0, the teacher's labels say half are 1.
    text = torch.eye(3, 8, dtype=torch.float64)
    truth = torch.arange(200) % 2
    lean = torch.linspace(0.1, 0.5, 200, dtype=torch.float64)
    points = torch.zeros(200, 8, dtype=torch.float64)
    points[:, 0] = 1.0 - lean * truth + 0.3 * (1 - truth)
    points[:, 1] = lean * truth
    assert (pseudo_labels(points, text) == truth).float().mean() == 0.5  # every point labelled 0
    aligned = aligned_point_labels(points, text, truth)
    assert (aligned == truth).float().mean() > 0.8
    # A student that already matches the teacher's class frequencies keeps its argmax.
    balanced = torch.eye(3, 8, dtype=torch.float64)[truth] + 0.01
    torch.testing.assert_close(aligned_point_labels(balanced, text, truth), pseudo_labels(balanced, text))


def test_aligned_point_labels_validate_and_accept_an_empty_batch():
    text = torch.eye(3, 4)
    assert aligned_point_labels(torch.zeros(0, 4), text, torch.zeros(0, dtype=torch.long)).shape == (0,)
    with pytest.raises(ValueError, match="pixel_labels must be class indices in 0..2"):
        aligned_point_labels(torch.ones(2, 4), text, torch.tensor([0, 3]))
