"""Every metric of `rodflow._metrics` on a case with a known answer."""

import numpy as np
import pytest

from rodflow._metrics import (
    LOSS_SMOOTH_WINDOW,
    best_lag,
    eos_onset_rule,
    flow_metrics,
    loss_error,
    loss_metrics,
    seed_spread,
    smooth,
)

STEPS = np.arange(0, 200, 10)


def test_onset_starting_below_is_first_crossing():
    s = np.where(STEPS < 60, 3.0, 5.5)
    assert eos_onset_rule(STEPS, s, 5.0) == (60, "crossing")


def test_onset_after_an_opening_transient_above_the_threshold():
    # starts at 34.6 > 28.6, falls below by step 30, progressive sharpening brings it back at 120
    s = np.select([STEPS < 30, STEPS < 120], [34.6, 27.0], 29.0)
    assert eos_onset_rule(STEPS, s, 28.6) == (120, "crossing_after_transient")


def test_onset_above_from_start_and_never_below():
    s = np.full(len(STEPS), 30.0)
    assert eos_onset_rule(STEPS, s, 28.6) == (0, "above_from_start")


def test_onset_transient_without_return_and_never_above():
    s = np.where(STEPS < 30, 34.6, 20.0)
    assert eos_onset_rule(STEPS, s, 28.6) == (None, None)
    assert eos_onset_rule(STEPS, np.full(len(STEPS), 1.0), 28.6) == (None, None)
    assert eos_onset_rule(STEPS[:0], STEPS[:0], 1.0) == (None, None)


def test_loss_error_is_a_ratio_of_means_not_a_mean_of_ratios():
    ref = np.array([1.0, 1e-12, 1.0, 1e-12])
    pred = ref + 0.1
    # pointwise relative errors would average ~5e10; the ratio of means is 0.1 / 0.5
    assert loss_error(pred, ref) == pytest.approx(0.2)
    assert loss_error(pred, np.zeros(4)) is None
    assert loss_error(np.array([np.nan, 1.0]), np.ones(2)) is None


def test_smooth_removes_period_two_and_keeps_a_line():
    k = np.arange(200, dtype=float)
    flip = (-1.0) ** k
    line = 3.0 + 0.01 * k
    s = smooth(line + flip, LOSS_SMOOTH_WINDOW)
    inner = slice(LOSS_SMOOTH_WINDOW, -LOSS_SMOOTH_WINDOW)
    # the symmetric even window weighs the +1 and -1 of the flip equally and keeps a line
    np.testing.assert_allclose(s[inner], line[inner], atol=1e-12)
    np.testing.assert_allclose(smooth(line, LOSS_SMOOTH_WINDOW), line, atol=1e-12)  # ends too
    assert smooth(np.ones(5), 20) == pytest.approx(np.ones(5))  # shorter than the window


def test_best_lag_recovers_a_known_shift_both_signs():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(300)
    for tau in (-7, 0, 5):
        pred = np.roll(ref, tau)  # pred[k + tau] = ref[k]: pred is tau steps late
        lag, corr = best_lag(pred, ref, max_lag=30)
        assert lag == tau and corr == pytest.approx(1.0)


def _spikes(n, at, width=3.0):
    k = np.arange(n, dtype=float)
    return sum(np.exp(-0.5 * ((k - a) / width) ** 2) for a in at)


def test_catapult_lag_of_early_spikes_and_of_a_flow_without_spikes():
    n = 400
    trend = 1.0 + np.exp(-np.arange(n) / 200.0)
    gd = trend + _spikes(n, (60, 150, 260))
    early = trend + _spikes(n, (50, 140, 250))  # every catapult 10 steps early
    m = loss_metrics(early, gd)
    assert m["catapult_lag_steps"] == -10
    assert m["catapult_corr"] > 0.95 and m["catapult_amplitude"] == pytest.approx(1.0, rel=1e-6)
    # the spikes, not the trend, make the pointwise error: smoothing the spikes away shrinks it
    assert m["loss_err_smooth_eos"] < m["loss_err_eos"]
    flat = loss_metrics(trend, gd)  # a flow that never catapults: nothing to align
    assert flat["catapult_lag_steps"] is None and flat["catapult_corr"] is None
    assert flat["catapult_amplitude"] < 0.01
    exact = loss_metrics(gd, gd)
    assert exact["loss_err_eos"] == 0 and exact["loss_err_smooth_eos"] == 0
    assert exact["catapult_lag_steps"] == 0


def _series(n, loss, loss_next, rel, sharp_steps, sharp):
    return {"loss": loss, "loss_next": loss_next, "rel_dist": rel, "disp": np.arange(n, dtype=float),
            "sharpness_step": sharp_steps, "sharpness": sharp}


def test_flow_metrics_measure_only_the_eos_phase():
    n, onset = 300, 100
    k = np.arange(n, dtype=float)
    gd_loss = 1.0 + 0 * k
    gd = {**_series(n, gd_loss, gd_loss, None, STEPS, np.ones(len(STEPS))), "eos_onset_step": onset}
    pred = np.where(k < onset, 100.0, 1.5)  # wrong before the onset, 50% off after it
    rel = np.where(k < onset, 9.0, 0.25)
    flow = {"loss": pred, "rel_dist": rel, "sharpness_step": STEPS, "sharpness": np.full(len(STEPS), 4.0)}
    m = flow_metrics(flow, gd)
    assert m["loss_err_eos"] == pytest.approx(0.5) and m["loss_err_smooth_eos"] == pytest.approx(0.5)
    assert m["rel_dist_mean_eos"] == pytest.approx(0.25) and m["rel_dist_max_eos"] == pytest.approx(0.25)
    assert m["rel_dist_max"] == 9.0  # the whole run includes the transient
    assert m["sharpness_mean_eos"] == 4.0
    assert m["catapult_amplitude"] is None  # GD's loss is flat: no wiggle to align
    none = flow_metrics(flow, {**gd, "eos_onset_step": None})
    assert none["loss_err_eos"] is None and none["rel_dist_mean_eos"] is None
    assert none["loss_err"] is not None


def test_seed_spread_mean_and_sample_std_skipping_missing_values():
    runs = [{"rod": {"d": 1.0, "lag": None, "name": "x"}}, {"rod": {"d": 3.0, "lag": 4}},
            {"rod": {"d": 2.0, "lag": float("nan")}}]
    s = seed_spread(runs)["rod"]
    assert s["d"] == {"mean": 2.0, "std": 1.0, "n": 3}
    assert s["lag"] == {"mean": 4.0, "std": 0.0, "n": 1}
    assert "name" not in s
