import numpy as np
import pandas as pd
import pytest

from lld_probe.analysis.lld_breakdown import (lld_by_length, lld_by_nthr_selection, lld_by_success_rate,
                                              selected_token_overlap, selected_token_overlap_summary)
from lld_probe.analysis.optimizer_comparison import compare_protocols
from lld_probe.analysis.protocol_figures import lld_breakdown_figure
from lld_probe.analysis.stats import lld_rate


def _protocol(seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(24):
        n_correct = 1 + q % 7
        base = rng.normal(0.05 * n_correct - 0.1, 0.1)
        for method, offset in (("grpo", 0.0), ("pos_only", 0.2), ("random", 0.0), ("nthr", 0.1)):
            rows.append({"question_id": f"q{q}", "method": method, "n_correct": n_correct, "p": n_correct / 8,
                         "delta_sum": base + offset + shift, "delta_mean": (base + offset) / 30,
                         "delta_incorrect_sum": -0.5, "pass_rate_before": np.nan, "pass_rate_after": np.nan})
    return pd.DataFrame(rows)


def test_lld_by_success_rate_uses_the_shared_lld_rate():
    protocol = _protocol()
    table = lld_by_success_rate(protocol)
    assert set(table["method"]) == {"grpo", "pos_only", "random", "nthr"}
    grpo = protocol[protocol["method"] == "grpo"]
    low = table[(table["method"] == "grpo") & (table["bin"] == "p < 1/3")].iloc[0]
    inside = grpo[grpo["p"] < 1 / 3]["delta_sum"]
    assert low["n"] == len(inside) and low["lld_share"] == pytest.approx(lld_rate(inside))
    assert low["lld_low"] <= low["lld_share"] <= low["lld_high"]
    assert low["median_delta"] == pytest.approx(inside.median())
    assert table.groupby("method")["n"].sum().eq(24).all()


def test_lld_by_nthr_selection_splits_questions_by_nthrs_selected_share():
    protocol = _protocol()
    fraction = {f"q{q}": (0.95 if q % 3 == 0 else 0.04) for q in range(24)}
    protocol["nthr_selected_fraction"] = protocol["question_id"].map(fraction)
    table = lld_by_nthr_selection(protocol)
    assert list(table["bin"].unique()) == ["NTHR selects < 50%", "NTHR selects ≥ 50%"]
    high = table[(table["method"] == "random") & (table["bin"] == "NTHR selects ≥ 50%")].iloc[0]
    inside = protocol[(protocol["method"] == "random") & (protocol["question_id"].map(fraction) >= 0.5)]
    assert high["n"] == 8 and high["lld_share"] == pytest.approx(lld_rate(inside["delta_sum"]))
    assert high["x"] == pytest.approx(0.95)
    assert lld_by_nthr_selection(protocol[protocol["method"] != "nthr"]).empty


def test_lld_by_length_is_over_correct_responses():
    responses = pd.DataFrame([{"question_id": f"q{q}", "method": v, "response_index": r, "correct": r < 3,
                               "n_tokens": 10 + 5 * r + q, "logp_before": -5.0,
                               "logp_after": -5.0 + (0.1 if r == 0 else -0.1)}
                              for q in range(6) for v in ("grpo", "pos_only") for r in range(8)])
    table = lld_by_length(responses)
    assert table.groupby("method")["n"].sum().eq(18).all()            # 6 questions x 3 correct responses
    shortest = table[table["method"] == "grpo"].sort_values("x").iloc[0]
    assert shortest["lld_share"] < table[table["method"] == "grpo"].sort_values("x").iloc[-1]["lld_share"]


def test_selected_token_overlap_counts_ids_and_pairs():
    rows = []
    for index, (text, correct, selected) in enumerate([("abc", True, "000"), ("abd", False, "110"),
                                                       ("xbz", False, "011")]):
        for position, (char, flag) in enumerate(zip(text, selected)):
            rows.append({"question_id": "q", "response_index": index, "position": position, "token_id": ord(char),
                         "correct": correct, "nthr_selected": flag == "1"})
    table = selected_token_overlap(pd.DataFrame(rows)).iloc[0]
    # selected: a, b (of abd), b, z (of xbz): ids a, b, b occur in "abc"; z does not
    assert table["selected"] == 4 and table["selected_shared"] == pytest.approx(3 / 4)
    # pairs: (start, a), (a, b) occur in abc; (x, b), (b, z) do not
    assert table["selected_shared_pair"] == pytest.approx(2 / 4)
    assert table["unselected_shared"] == pytest.approx(0.0)           # d, x
    # "abd" shares the opening "ab" with "abc": selected a, b of it are in the opening, xbz's are not
    assert table["selected_shared_opening"] == pytest.approx(2 / 4)
    assert table["unselected_shared_opening"] == pytest.approx(0.0)
    assert len(selected_token_overlap_summary(pd.DataFrame(rows))) == 6


@pytest.mark.integration
def test_breakdown_figures_and_comparison(tmp_path):
    protocol = _protocol()
    written = lld_breakdown_figure(lld_by_success_rate(protocol), tmp_path, "lld_vs_success_rate",
                                   xlabel="group success rate p", unit="questions")
    assert [p.suffix for p in written] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in written)
    table = compare_protocols({"sgd": protocol, "adamw": _protocol(shift=-0.3)})
    assert len(table) == 8
    row = table[(table["protocol"] == "sgd") & (table["method"] == "pos_only")].iloc[0]
    assert row["higher_than_grpo"] == "24/24" and row["wilcoxon_p"] < 1e-4
    assert table[table["protocol"] == "adamw"]["lld_share"].max() > table[table["protocol"] == "sgd"]["lld_share"].max()
    with pytest.raises(ValueError, match="empty"):
        lld_breakdown_figure(pd.DataFrame(), tmp_path, "x", xlabel="", unit="")


def test_paired_lld_change_counts_rescued_and_newly_lazy_questions():
    from scipy.stats import binomtest

    from lld_probe.analysis.stats import paired_lld_change
    from lld_probe.core import is_lazy
    assert is_lazy([-1.0, 0.0, 1e-9, np.nan]).tolist() == [True, True, False, False]
    grpo = [-0.3, -0.1, 0.0, 0.2, -0.5, 0.4, np.nan]
    other = [0.1, 0.2, 0.3, -0.1, -0.2, 0.5, -1.0]       # rescues 3, makes 1 lazy, last question unpaired
    frame = pd.DataFrame([{"question_id": f"q{i}", "method": v, "delta_sum": d}
                          for v, values in (("grpo", grpo), ("nthr", other)) for i, d in enumerate(values)])
    change = paired_lld_change(frame, "grpo", "nthr")
    assert change["rescued"] == 3 and change["newly_lazy"] == 1
    assert change["mcnemar_p"] == pytest.approx(binomtest(3, 4).pvalue) == pytest.approx(0.625)
    assert np.isnan(paired_lld_change(frame, "grpo", "grpo")["mcnemar_p"])
    with pytest.raises(ValueError, match="must be in the frame"):
        paired_lld_change(frame, "grpo", "pos_only")


def test_lld_over_correct_responses_counts_every_correct_response_once_per_method():
    from lld_probe.analysis.lld_breakdown import lld_over_correct_responses
    responses = pd.DataFrame([{"question_id": f"q{q}", "method": v, "response_index": r, "correct": r < 3,
                               "n_tokens": 10, "logp_before": -5.0,
                               "logp_after": -5.0 + (0.1 if v == "pos_only" else 0.1 * (r - 1))}
                              for q in range(4) for v in ("grpo", "pos_only") for r in range(8)])
    table = lld_over_correct_responses(responses).set_index("method")
    assert table.loc["grpo", "n"] == 12 and table.loc["grpo", "lazy"] == 8         # r = 0, 1 lose or keep
    assert table.loc["grpo", "lld_share"] == pytest.approx(8 / 12)
    assert table.loc["pos_only", "lazy"] == 0 and table.loc["pos_only", "lld_high"] == 0


def test_method_summary_gives_the_lld_share_an_interval():
    from lld_probe.analysis.stats import bootstrap_ci, method_summary
    protocol = _protocol()
    row = method_summary(protocol).set_index("method").loc["grpo"]
    deltas = protocol[protocol["method"] == "grpo"]["delta_sum"]
    assert (row["lld_share"], row["lld_low"], row["lld_high"]) == pytest.approx(bootstrap_ci(deltas, lld_rate))
    assert row["lld_low"] <= row["lld_share"] <= row["lld_high"]
