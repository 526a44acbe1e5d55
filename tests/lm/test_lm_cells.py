"""Hippocampal codes: k-WTA at a learned level, grid hexagons, time-cell fields, theta-gamma,
rhythm features read from text."""

from __future__ import annotations

import math

import torch

from engram import codes
from engram.lm.cells import (
    GridCells,
    PlaceCells,
    RhythmFeatures,
    ThetaGammaCode,
    TimeCells,
    soft_threshold_kwta,
)


def test_kwta_keeps_exactly_k_winners_at_an_integer_level():
    u = torch.randn(5, 7, 100)
    code, mask = soft_threshold_kwta(u, torch.tensor(0.05), max_level=0.25)
    assert torch.equal(mask.sum(-1), torch.full((5, 7), 5.0))
    winners = torch.topk(u, 5, dim=-1).values
    assert torch.equal(
        torch.sort(code[mask.bool()].view(5, 7, 5), -1).values, torch.sort(winners, -1).values
    )


def test_kwta_forward_mask_is_the_core_kwta_at_an_integer_level():
    # the learned, fractional k-WTA is the one in engram.codes where k = level·N is whole
    u = torch.randn(6, 3, 80, generator=torch.Generator().manual_seed(4))
    _, mask = soft_threshold_kwta(u, torch.tensor(0.1), max_level=0.2)
    assert torch.equal(mask.to(torch.int8), codes.kwta(u, 8))


def test_kwta_is_scatter_free_and_passes_gradients_to_the_level():
    u = torch.randn(4, 64, requires_grad=True)
    level = torch.tensor(0.1, requires_grad=True)
    code, _ = soft_threshold_kwta(u, level, max_level=0.25)
    code.pow(2).sum().backward()
    assert level.grad is not None and float(level.grad.abs()) > 0
    assert u.grad is not None
    source = soft_threshold_kwta.__code__.co_names
    assert not any("scatter" in name for name in source)


def test_place_cell_coding_level_is_learned():
    torch.manual_seed(0)
    cells = PlaceCells(16, 40, init_level=0.1)
    assert math.isclose(float(cells.coding_level.detach()), 0.1, rel_tol=1e-5)
    x = torch.randn(32, 16)
    before = float(cells.coding_level.detach())
    for _ in range(5):  # reward more activity: the level must rise
        cells.zero_grad()
        (-cells(x).abs().sum()).backward()
        with torch.no_grad():
            for p in cells.parameters():
                p -= p.grad
    assert float(cells.coding_level.detach()) > before


def test_grid_cells_are_hexagonal():
    grid = GridCells(8, n_modules=1, cells_per_module=1, min_scale=5.0)
    offset = grid.offsets[0, 0]
    angles = torch.linspace(0, 2 * math.pi, 7)[:-1]
    r = 1.3
    points = offset + r * torch.stack([torch.cos(angles + 0.2), torch.sin(angles + 0.2)], -1)
    rates = grid.rates(points)[:, 0]
    # sixfold symmetry around a firing field's centre; the centre is a peak of rate 1
    torch.testing.assert_close(rates, rates[:1].expand(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(grid.rates(offset[None])[0, 0], torch.tensor(1.0))
    # a lattice translation (one spacing along a lattice axis at 30° from the waves) is a peak
    axis = torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)]) * 5.0
    torch.testing.assert_close(
        grid.rates((offset + axis)[None])[0, 0], torch.tensor(1.0), atol=1e-5, rtol=0
    )


def test_time_cell_fields_peak_at_log_spaced_lags():
    cells = TimeCells(8, n_cells=6, dim=2, max_lag=64)
    peaks = cells.fields().argmax(-1).float()
    assert peaks[0] == 1 and peaks[-1] == 63
    ratios = (peaks[1:] + 1) / (peaks[:-1] + 1)
    assert float(ratios.std() / ratios.mean()) < 0.2  # roughly constant ratio: log spacing


def test_time_cells_see_only_the_past():
    torch.manual_seed(0)
    cells = TimeCells(8, n_cells=4, dim=4, max_lag=16)
    emb = torch.randn(1, 20, 8)
    changed = emb.clone()
    changed[:, 12] += 5.0
    a, b = cells(emb, 0), cells(changed, 0)
    torch.testing.assert_close(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_theta_gamma_nests_gamma_slots_in_theta_cycles():
    code = ThetaGammaCode(8, gamma_per_theta=6).code(torch.arange(24))
    slots = code[:, :6].argmax(-1)
    assert torch.equal(slots, torch.arange(24) % 6)
    torch.testing.assert_close(code[0, 6:], code[5, 6:])  # same theta cycle, same slow clock
    assert not torch.allclose(code[0, 6:], code[6, 6:])


def test_rhythm_features_come_from_the_text():
    vocab = ["a", "b", " ", "\n", ".", "T"]
    rhythm = RhythmFeatures(len(vocab))
    rhythm.set_vocabulary(vocab)
    text = "Tab ab.\nab"
    ids = torch.tensor([[vocab.index(c) for c in text]])
    feats = rhythm(ids)[0][0]
    assert feats[0, 4] == 1.0  # capital
    assert feats[6, 1] == 1.0 and feats[7, 0] == 1.0  # sentence end, newline
    since_space = torch.expm1(feats[:, 6] * math.log(65.0)).round()
    assert since_space.tolist() == [1, 2, 3, 0, 1, 2, 3, 4, 5, 6]
    since_newline = torch.expm1(feats[:, 7] * math.log(65.0)).round()
    assert since_newline.tolist() == [1, 2, 3, 4, 5, 6, 7, 0, 1, 2]
    # carrying the state over the first tokens gives the features of counting the whole text
    _, state = rhythm(ids[:, :4])
    torch.testing.assert_close(rhythm(ids[:, 4:], state)[0], feats[None, 4:])
    for t in range(4, ids.shape[1]):  # one token at a time, as cached decoding does
        step, state = rhythm(ids[:, t : t + 1], state)
        torch.testing.assert_close(step[0, 0], feats[t])


def test_time_cells_banded_product_matches_the_convolution():
    torch.manual_seed(0)
    conv = TimeCells(8, n_cells=4, dim=3, max_lag=8)  # no table: the convolution
    banded = TimeCells(8, n_cells=4, dim=3, max_lag=8, n_positions=20)
    banded.load_state_dict(conv.state_dict())
    assert conv.band.shape[0] == 0 and banded.band.shape[0] == 20
    emb = torch.randn(2, 20, 8)
    for start in (0, 5, 19):  # the whole window, a continuation, one cached step
        torch.testing.assert_close(banded(emb, start), conv(emb, start))


def test_position_code_tables_match_codes_computed_on_the_fly():
    torch.manual_seed(0)
    for make in (GridCells, ThetaGammaCode):
        plain, tabled = make(8), make(8, n_positions=16)
        tabled.load_state_dict(plain.state_dict())
        code = tabled.position_code if make is GridCells else tabled
        reference = plain.position_code if make is GridCells else plain
        torch.testing.assert_close(code(3, 16), reference(3, 16))  # from the table
        torch.testing.assert_close(code(10, 20), reference(10, 20))  # beyond it
