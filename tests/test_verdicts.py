"""Paired verdicts: sign test, bootstrap interval and the holds/contradicted/inconclusive rule."""

import math

import pandas as pd
import pytest

from crossmodal.verdicts import bootstrap_ci, compare, pair_differences, paired_verdict, sign_test


def test_sign_test_exact_values():
    assert sign_test(0, 0) == 1.0
    assert sign_test(3, 0) == pytest.approx(0.25)          # 2 * 1/8
    assert sign_test(6, 0) == pytest.approx(2 / 64)
    assert sign_test(9, 1) == pytest.approx(2 * 11 / 1024)
    assert sign_test(5, 5) == 1.0


def test_bootstrap_ci_contains_mean_and_is_seeded():
    d = [1.0, 2.0, 3.0, 4.0]
    lo, hi = bootstrap_ci(d)
    assert lo <= 2.5 <= hi and (lo, hi) == bootstrap_ci(d)
    assert all(math.isnan(v) for v in bootstrap_ci([]))


def test_verdict_rule():
    assert paired_verdict([1.0] * 8).verdict == "holds"
    assert paired_verdict([-1.0] * 8).verdict == "contradicted"
    # three wins: the bootstrap interval is above 0 but the sign test cannot reach 0.05
    v = paired_verdict([1.0, 2.0, 3.0])
    assert v.ci_low > 0 and v.p_sign == pytest.approx(0.25) and v.verdict == "inconclusive"
    noisy = paired_verdict([1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 0.0, 0.0])
    assert noisy.verdict == "inconclusive" and noisy.ties == 2
    assert "sign test p" in noisy.detail()


def _runs(values):
    rows = []
    for (task, metric, lower), per_variant in values.items():
        for variant, finals in per_variant.items():
            for seed, f in enumerate(finals):
                rows.append({"task": task, "seed": seed, "variant": variant, "final": f,
                             "metric": metric, "lower_is_better": lower})
    return pd.DataFrame(rows)


def test_pair_differences_units_and_orientation():
    one = _runs({("t1", "err", True): {"a": [10, 20, 30], "b": [12, 25, 29]}})
    d, units = pair_differences(one, "a", "b")
    assert units == "" and d == [2, 5, -1]
    # a higher-is-better metric flips the sign; two metrics pool relative differences
    two = _runs({("t1", "err", True): {"a": [10], "b": [20]},
                 ("t2", "acc", False): {"a": [0.9], "b": [0.8]}})
    d, units = pair_differences(two, "a", "b")
    assert units == "%" and all(x > 0 for x in d)
    assert d[0] == pytest.approx(100 * 10 / 15)


def test_compare_missing_variant_is_inconclusive():
    runs = _runs({("t1", "err", True): {"a": [1, 2, 3]}})
    v = compare(runs, "a", "b")
    assert v.n_pairs == 0 and v.verdict == "inconclusive"
