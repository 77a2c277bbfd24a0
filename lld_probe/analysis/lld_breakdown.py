"""Where LLD lives in a protocol: the LLD share and the median Delta over all correct responses, against
the group's success rate p, against response length and against the share of incorrect tokens NTHR
selects, and how many of NTHR's selected tokens also occur in a correct response of the group (the paper's mechanism: negative gradients on tokens shared with correct
responses displace their likelihood)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .stats import bootstrap_ci, is_lazy, lld_rate

P_BINS = [(0.0, 1 / 3, "p < 1/3"), (1 / 3, 2 / 3, "1/3 ≤ p < 2/3"), (2 / 3, 1.0, "p ≥ 2/3")]


def _interval_row(values, **keys) -> dict:
    """LLD share and median Delta of `values` with bootstrap 95% intervals."""
    share, share_low, share_high = bootstrap_ci(values, statistic=lld_rate)
    median, low, high = bootstrap_ci(values)
    return {**keys, "n": int(np.sum(~np.isnan(np.asarray(values, dtype=float)))), "lld_share": share,
            "lld_low": share_low, "lld_high": share_high, "median_delta": median, "median_low": low,
            "median_high": high}


def lld_by_success_rate(protocol: pd.DataFrame) -> pd.DataFrame:
    """Per method and bin of the group's success rate p: questions, LLD share (Delta(x) <= 0) and
    median Delta(x), each with a bootstrap interval over the questions."""
    rows = []
    for method, group in protocol.groupby("method", sort=False):
        for low, high, name in P_BINS:
            inside = group[(group["p"] >= low) & ((group["p"] < high) | (high == 1.0))]
            if len(inside):
                rows.append(_interval_row(inside["delta_sum"].to_numpy(), method=method, bin=name,
                                          x=float(inside["p"].mean())))
    return pd.DataFrame(rows)


def lld_by_nthr_selection(protocol: pd.DataFrame, split: float = 0.5) -> pd.DataFrame:
    """Per method and by the share of the incorrect responses' tokens NTHR selects (the protocol's
    nthr_selected_fraction, below / at or above `split`; x: its mean in the bin): questions, LLD share and
    median Delta(x), with bootstrap intervals. When NTHR selects nearly everything, GRPO + Random with the same count is
    close to Pos Only while NTHR keeps exactly the tokens it left, so the two regimes answer different
    questions about NTHR."""
    if "nthr_selected_fraction" not in protocol or not (protocol["method"] == "nthr").any():
        return pd.DataFrame()
    fraction = protocol[protocol["method"] == "nthr"].set_index("question_id")["nthr_selected_fraction"]
    rows = []
    for method, group in protocol.groupby("method", sort=False):
        share = group["question_id"].map(fraction)
        for inside, name in ((share < split, f"NTHR selects < {split:.0%}"),
                             (share >= split, f"NTHR selects ≥ {split:.0%}")):
            if inside.any():
                rows.append(_interval_row(group.loc[inside, "delta_sum"].to_numpy(), method=method, bin=name,
                                          x=float(share[inside].mean())))
    return pd.DataFrame(rows)


def correct_response_deltas(responses: pd.DataFrame) -> pd.DataFrame:
    """One row per correct response and method: its Delta = log pi_after(y+|x) - log pi_before(y+|x)
    (PAPER: the LLD criterion for (x, y+)) and its length."""
    correct = responses[responses["correct"].astype(bool)].copy()
    correct["delta"] = correct["logp_after"] - correct["logp_before"]
    return correct[["question_id", "method", "response_index", "n_tokens", "delta"]]


def lld_over_correct_responses(responses: pd.DataFrame) -> pd.DataFrame:
    """Per method, over all correct responses: how many lose likelihood (Delta <= 0), the share with a
    bootstrap interval, and their median Delta."""
    deltas = correct_response_deltas(responses)
    return pd.DataFrame([{**_interval_row(group["delta"].to_numpy(), method=method),
                          "lazy": int(is_lazy(group["delta"]).sum())}
                         for method, group in deltas.groupby("method", sort=False)])


def lld_by_length(responses: pd.DataFrame, bins: int = 3) -> pd.DataFrame:
    """Per method and length tertile (quantile bins of the correct responses' token counts): LLD
    share over correct responses and their median Delta, with bootstrap intervals."""
    deltas = correct_response_deltas(responses)
    if deltas.empty:
        return pd.DataFrame()
    lengths = deltas.drop_duplicates(["question_id", "response_index"])["n_tokens"]
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        edges = np.array([lengths.min(), lengths.max() + 1])
    deltas["bin"] = pd.cut(deltas["n_tokens"], edges, include_lowest=True)
    rows = []
    for method, group in deltas.groupby("method", sort=False):
        for interval, inside in group.groupby("bin", observed=True):
            rows.append(_interval_row(inside["delta"].to_numpy(), method=method,
                                      bin=f"{math.ceil(interval.left)}-{math.floor(interval.right)} tokens",
                                      x=float(inside["n_tokens"].mean())))
    return pd.DataFrame(rows)


def _shared_opening(group: pd.DataFrame) -> np.ndarray:
    """Per token of the group (in its order): True where the token lies in the longest opening its
    response shares with a correct response of the group (the same token in the same context)."""
    sequences = {index: frame["token_id"].tolist() for index, frame in group.groupby("response_index", sort=False)}
    correct = set(group.loc[group["correct"].astype(bool), "response_index"])
    flags = []
    for index, sequence in sequences.items():
        longest = 0
        for other in correct - {index}:
            reference = sequences[other]
            length = 0
            while length < min(len(sequence), len(reference)) and sequence[length] == reference[length]:
                length += 1
            longest = max(longest, length)
        flags += [position < longest for position in range(len(sequence))]
    return np.array(flags, dtype=bool)


def selected_token_overlap(tokens: pd.DataFrame) -> pd.DataFrame:
    """Per question: among incorrect responses' tokens, the share whose token id (and whose pair of
    previous and current token ids) also occurs in a correct response of the group, and the share in
    the opening the response shares word for word with a correct one, for NTHR's selected tokens and
    for the unselected ones (the baseline)."""
    rows = []
    for question_id, group in tokens.groupby("question_id", sort=False):
        group = group.sort_values(["response_index", "position"])
        opening = _shared_opening(group)
        previous = group.groupby("response_index")["token_id"].shift(1).fillna(-1).astype(int)
        pairs = list(zip(previous, group["token_id"]))
        correct = group["correct"].astype(bool).to_numpy()
        correct_ids = set(group.loc[correct, "token_id"])
        correct_pairs = {pair for pair, is_correct in zip(pairs, correct) if is_correct}
        incorrect = group[~correct]
        if incorrect.empty or not correct_ids:
            continue
        in_correct = incorrect["token_id"].isin(correct_ids).to_numpy()
        pair_in_correct = np.array([pair in correct_pairs for pair, is_correct in zip(pairs, correct) if not is_correct])
        selected = incorrect["nthr_selected"].astype(bool).to_numpy()
        rows.append({"question_id": question_id, "selected": int(selected.sum()), "unselected": int((~selected).sum()),
                     "selected_shared": float(in_correct[selected].mean()) if selected.any() else math.nan,
                     "unselected_shared": float(in_correct[~selected].mean()) if (~selected).any() else math.nan,
                     "selected_shared_pair": float(pair_in_correct[selected].mean()) if selected.any() else math.nan,
                     "unselected_shared_pair": float(pair_in_correct[~selected].mean()) if (~selected).any() else math.nan,
                     "selected_shared_opening": float(opening[~correct][selected].mean()) if selected.any() else math.nan,
                     "unselected_shared_opening": float(opening[~correct][~selected].mean()) if (~selected).any() else math.nan})
    return pd.DataFrame(rows)


def selected_token_overlap_summary(tokens: pd.DataFrame) -> pd.DataFrame:
    """Mean over questions of selected_token_overlap's shares, with bootstrap 95% intervals."""
    per_question = selected_token_overlap(tokens)
    rows = []
    for column, what in (("selected_shared", "NTHR-selected tokens: token id occurs in a correct response"),
                         ("unselected_shared", "unselected incorrect tokens: token id occurs in a correct response"),
                         ("selected_shared_pair", "NTHR-selected tokens: (previous, token) pair occurs in a correct response"),
                         ("unselected_shared_pair", "unselected incorrect tokens: (previous, token) pair occurs in a correct response"),
                         ("selected_shared_opening", "NTHR-selected tokens: in the opening shared word for word with a correct response"),
                         ("unselected_shared_opening", "unselected incorrect tokens: in the opening shared word for word with a correct response")):
        if per_question.empty:
            continue
        mean, low, high = bootstrap_ci(per_question[column], statistic=np.mean)
        rows.append({"tokens": what, "questions": int(per_question[column].notna().sum()), "mean_share": mean,
                     "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)
