"""GrowthBook (gbstats 0.8.0) oracle, run in its own virtualenv (its pins conflict with the
main one). Reads a JSON list of requests on stdin, writes a JSON list of results on stdout.

Requests: {"kind": "welch"|"cuped"|"ratio"|"sequential", "alpha": ..., "a": {...}, "b": {...}}
with a = control and b = treatment, in gbstats' own statistic fields.
"""
import json
import sys

from gbstats.frequentist.tests import (
    FrequentistConfig,
    SequentialConfig,
    SequentialTwoSidedTTest,
    TwoSidedTTest,
)
from gbstats.models.statistics import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    compute_theta,
)


def mean_stat(d):
    return SampleMeanStatistic(n=d["n"], sum=d["sum"], sum_squares=d["sum_squares"])


def build(req):
    kind = req["kind"]
    a, b = req["a"], req["b"]
    if kind in ("welch", "sequential"):
        return mean_stat(a), mean_stat(b), None
    if kind == "sequential_prop":
        return ProportionStatistic(n=a["n"], sum=a["sum"]), ProportionStatistic(n=b["n"], sum=b["sum"]), None
    if kind == "cuped":
        def ra(d):
            return RegressionAdjustedStatistic(
                n=d["n"],
                post_statistic=SampleMeanStatistic(n=d["n"], sum=d["sum"], sum_squares=d["sum_squares"]),
                pre_statistic=SampleMeanStatistic(n=d["n"], sum=d["pre_sum"], sum_squares=d["pre_sum_squares"]),
                post_pre_sum_of_products=d["sum_products"],
                theta=0,
            )
        sa, sb = ra(a), ra(b)
        theta = compute_theta(sa, sb)
        sa.theta = theta
        sb.theta = theta
        return sa, sb, theta
    if kind == "ratio":
        def rs(d):
            return RatioStatistic(
                n=d["n"],
                m_statistic=SampleMeanStatistic(n=d["n"], sum=d["m_sum"], sum_squares=d["m_sum_squares"]),
                d_statistic=SampleMeanStatistic(n=d["n"], sum=d["d_sum"], sum_squares=d["d_sum_squares"]),
                m_d_sum_of_products=d["sum_products"],
            )
        return rs(a), rs(b), None
    raise ValueError(kind)


def run(req):
    sa, sb, theta = build(req)
    alpha = req.get("alpha", 0.05)
    if req["kind"].startswith("sequential"):
        test = SequentialTwoSidedTTest(
            sa, sb, SequentialConfig(difference_type="absolute", alpha=alpha,
                                     sequential_tuning_parameter=req.get("tuning", 5000))
        )
    else:
        test = TwoSidedTTest(sa, sb, FrequentistConfig(difference_type="absolute", alpha=alpha))
    res = test.compute_result()
    return {
        "expected": res.expected,
        "ci": list(res.ci),
        "p_value": res.p_value,
        "theta": theta,
        "mean_a": sa.mean,
        "mean_b": sb.mean,
        "var_a": sa.variance,
        "var_b": sb.variance,
        "error": res.error_message,
    }


if __name__ == "__main__":
    json.dump([run(r) for r in json.load(sys.stdin)], sys.stdout)
