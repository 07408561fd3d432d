"""Report sentences against the numbers behind them (found by recomputing small jobs' reports
from their saved arrays)."""


def test_dln_staircase_share_when_no_seed_learns_every_mode():
    """`dmft dln` with a run too short for mode 4 (8 seeds, t = 40: modes 1-3 learned by all, mode 4
    by none) read "(0% of the seeds that learn every mode within the run, 0% of seeds)": the in-order
    share of an empty set, 0 of 0, shown as if such seeds had learned out of order. With no seed
    learning every mode the report says so and gives no share."""
    from experiments.dln import load_config
    from experiments.dln.report import markdown

    data = {"kind": "linear_teacher", "d_in": 4, "d_out": 4, "singular_values": [3.0, 2.0], "P": 20,
            "label_noise": 0.0, "meta": {}}
    stair = {"init_scale": 0.01, "order_ok": False, "all_learned": False, "fraction_of_seeds_in_order": 0.0,
             "fraction_all_learned": 0.0, "learning_times": [12.0, float("inf")], "plateaus": []}
    study = {"sigma": 0.0, "data": data, "effective_s": [3.0, 2.0], "networks_s": 1.0, "modes": [],
             "diffusion": [], "figures": {}, "staircase": stair}
    text = markdown({"config": load_config(None, []), "studies": [study], "checks": [], "wall_s": 1.0})
    assert "0% of the seeds that learn every mode" not in text
    assert "no seed learns every mode within the run" in text
    # some seeds learn every mode: the share and its denominator as before
    study["staircase"] = {**stair, "fraction_all_learned": 0.25}
    text = markdown({"config": load_config(None, []), "studies": [study], "checks": [], "wall_s": 1.0})
    assert "(0% of the seeds that learn every mode within the run, 25% of seeds)" in text


def test_dln_cross_shift_of_rounding_is_no_shift():
    """Without label noise the cross-mode shift is 0 but for rounding (the sigma = 0 study's
    `cross_shift` was [-2.6e-32, -7.4e-32, ...]); the report read "lowers each mode's mean by
    2.6e-30%, 7.4e-30%, ... of its target": rounding as an effect. It says there is no shift; a
    real shift (sigma = 1: 0.59%, ...) reads as before."""
    from experiments.dln import load_config
    from experiments.dln.report import markdown

    data = {"kind": "linear_teacher", "d_in": 4, "d_out": 4, "singular_values": [3.0, 2.0], "P": 20,
            "label_noise": 0.0, "meta": {}}
    study = {"sigma": 0.0, "data": data, "effective_s": [3.0, 2.0], "networks_s": 1.0, "modes": [],
             "diffusion": [], "figures": {}, "cross_shift": [-2.55e-32, -7.38e-32]}
    text = markdown({"config": load_config(None, []), "studies": [study], "checks": [], "wall_s": 1.0})
    assert "e-30%" not in text and "does not shift the modes' means" in text
    study["cross_shift"] = [-0.0059, -0.0063]
    text = markdown({"config": load_config(None, []), "studies": [study], "checks": [], "wall_s": 1.0})
    assert "lowers each mode's mean by 0.59%, 0.63% of its target" in text
