#!/usr/bin/env python3
"""Generates the reference fixtures of `verdict-stats` from scipy, statsmodels, gbstats and mpmath.

Run from the repository root:

    python3 -m venv ~/.cache/verdict-py-main && ~/.cache/verdict-py-main/bin/pip install -r scripts/stats/requirements.txt
    python3 -m venv ~/.cache/verdict-py-gb && ~/.cache/verdict-py-gb/bin/pip install -r scripts/stats/requirements-gbstats.txt
    ~/.cache/verdict-py-main/bin/python scripts/stats/gen_fixtures.py [--gb-python ~/.cache/verdict-py-gb/bin/python]

Writes crates/verdict-stats/tests/fixtures/{distributions,analyze_cases}.json. The Rust tests read
them; Python is not needed at test time.

Every expected value is an "exact" reference: closed-form formulas evaluated with mpmath at 50
digits from the very same double inputs, and each is cross-checked here against the library that
defines it (statsmodels `proportions_ztest`, `confint_proportions_2indep`, `NormalIndPower`,
`multipletests`; scipy `ttest_ind_from_stats`, `chisquare`, `integrate.quad`; gbstats
`TwoSidedTTest`, `SequentialTwoSidedTTest`, `compute_theta`, `RatioStatistic`). The script stops
if a library disagrees beyond what its own floating point explains, so a fixture never encodes
a formula that only this script believes.
"""
import argparse
import collections
import json
import math
import os
import subprocess
import sys

import mpmath as mp
import numpy as np
import scipy
import statsmodels
from scipy import integrate, stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_effectsize,
    proportions_ztest,
)

mp.mp.dps = 50
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates", "verdict-stats", "tests", "fixtures")
HALF = mp.mpf(1) / 2


def f(x):
    return float(x)


CHECKS = collections.Counter()


def check(name, ours, lib, rtol, atol=0.0):
    """Stops when a library disagrees with the mpmath reference."""
    if ours is None or lib is None or (isinstance(lib, float) and math.isnan(lib)):
        return
    CHECKS[name.split("(")[0].split(" lo")[0].split(" hi")[0]] += 1
    if abs(f(ours) - lib) > rtol * abs(f(ours)) + atol:
        sys.exit(f"cross-check failed: {name}: mpmath {f(ours)!r} vs library {lib!r}")


# ---------------------------------------------------------------- distributions (mpmath)

def q_norm(z):
    return mp.erfc(mp.mpf(z) / mp.sqrt(2)) / 2


def t_sf(t, df):
    t, df = mp.mpf(t), mp.mpf(df)
    if t < 0:
        return 1 - t_sf(-t, df)
    x = df / (df + t * t)
    return mp.betainc(df / 2, HALF, 0, x, regularized=True) / 2


def t_isf(q, df):
    q = mp.mpf(q)
    guess = mp.mpf(stats.t.isf(float(q), float(df)))
    return mp.findroot(lambda t: mp.log(t_sf(t, df)) - mp.log(q), guess, tol=mp.mpf(10) ** -40)


def z_isf(q):
    q = mp.mpf(q)
    return mp.findroot(lambda z: mp.log(q_norm(z)) - mp.log(q), mp.mpf(stats.norm.isf(float(q))))


def chi2_sf(x, df):
    return mp.gammainc(mp.mpf(df) / 2, mp.mpf(x) / 2, mp.inf, regularized=True)


def distributions():
    out = {"normal_sf": [], "normal_isf": [], "t_sf": [], "t_isf": [], "chi2_sf": []}
    for z in [0.0, 0.5, 1.0, 1.959963984540054, 3.0, 5.0, 8.0, 10.0, 20.0, 30.0, 37.0, 37.5]:
        v = q_norm(z)
        check("norm.sf", v, stats.norm.sf(z), 1e-12)
        out["normal_sf"].append({"z": z, "sf": f(v)})
    for q in [0.5, 0.3, 0.05, 0.025, 0.005, 1e-6, 1e-12, 1e-50, 1e-150, 1e-300]:
        v = z_isf(q)
        check("norm.isf", v, stats.norm.isf(q), 1e-12)
        out["normal_isf"].append({"q": q, "z": f(v)})
    dfs = [1.0, 2.0, 3.0, 4.5, 10.0, 29.7, 100.0, 1e3, 2e3, 5e3, 9999.5, 1e4, 12345.6, 1e5, 199999.0, 2e5, 1e6, 1e7, 1e9, 1e12]
    for df in dfs:
        for t in [0.0, 0.3, 1.0, 1.96, 3.0, 6.0, 10.0, 37.0, 1e3, 1e10]:
            if t > 38 and df > 200:
                continue  # below 1e-300 anyway, and mpmath's betainc crawls there
            v = t_sf(t, df)
            if v < mp.mpf("1e-300"):
                continue
            check(f"t.sf({t},{df})", v, stats.t.sf(t, df), 1e-8)
            out["t_sf"].append({"t": t, "df": df, "sf": f(v)})
        for q in [0.25, 0.025, 0.005, 1e-6, 1e-12]:
            v = t_isf(q, df)
            check(f"t.isf({q},{df})", v, stats.t.isf(q, df), 1e-8)
            out["t_isf"].append({"q": q, "df": df, "t": f(v)})
    # Beta-posterior chance to beat control and risks over the whole range of sizes and rates.
    out["beta"] = []
    rng = np.random.default_rng(11)
    for k in range(60):
        n_c = int(round(10 ** rng.uniform(0.31, 9)))
        n_t = int(round(n_c * 10 ** rng.uniform(-1, 1))) if k % 3 else n_c
        n_t = max(n_t, 2)
        rate = 10 ** rng.uniform(-6, math.log10(0.999))
        x_c = int(min(n_c, rng.binomial(n_c, rate)))
        x_t = int(min(n_t, rng.binomial(n_t, min(1.0, rate * rng.uniform(0.8, 1.25)))))
        if k % 10 == 0:
            x_t = 0
        if k % 10 == 5:
            x_c, x_t = n_c, n_t
        p, risk, risk_c = beta_bayes(x_c, n_c, x_t, n_t)
        out["beta"].append({"x_c": x_c, "n_c": n_c, "x_t": x_t, "n_t": n_t, "p": p, "risk": risk, "risk_control": risk_c})
    for df in [1, 2, 3, 5, 9]:
        for x in [0.0001, 0.5, 1.0, 3.84, 10.0, 18.18, 50.0, 200.0, 1000.0]:
            v = chi2_sf(x, df)
            check("chi2.sf", v, stats.chi2.sf(x, df), 1e-12)
            out["chi2_sf"].append({"x": x, "df": df, "sf": f(v)})
    return out


# ---------------------------------------------------------------- the analysis oracle

def z_crit(alpha):
    return z_isf(mp.mpf(alpha) / 2)


def sequential(diff, se, n_total, alpha, tuning):
    a = mp.mpf(alpha)
    rho2 = (-2 * mp.log(a) + mp.log(1 - 2 * mp.log(a))) / tuning
    nr = n_total * rho2
    half = se * mp.sqrt((nr + 1) / nr * mp.log((nr + 1) / a**2))
    z = diff / se
    ln_e = nr * z * z / (2 * (nr + 1)) - mp.log(nr + 1) / 2
    return [diff - half, diff + half], min(mp.mpf(1), mp.exp(-ln_e))


def normal_bayes(diff, se):
    z = diff / se
    def loss(z):  # E[max(-D, 0)] for D ~ N(z, 1)
        return mp.npdf(z) - z * q_norm(z)
    return mp.ncdf(z), se * loss(z), se * loss(-z)


def beta_bayes(xc, nc, xt, nt):
    """P(p_t > p_c) and expected losses under Beta(1+x, 1+n-x), by scipy quadrature on the
    posterior windows, cross-checked by Evan Miller's exact sum when the counts are small."""
    at, bt, ac, bc = 1 + xt, 1 + nt - xt, 1 + xc, 1 + nc - xc
    mt, mc = at / (at + bt), ac / (ac + bc)
    sd = lambda a, b: math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    st, sc = sd(at, bt), sd(ac, bc)
    lo = max(0.0, min(mt - 40 * st, mc - 40 * sc))
    hi = min(1.0, max(mt + 40 * st, mc + 40 * sc))
    pts = sorted({min(max(m + k * s, lo), hi) for m, s in ((mt, st), (mc, sc)) for k in range(-12, 13, 2)})
    ft = lambda x: stats.beta.pdf(x, at, bt)
    kw = dict(limit=2000, epsabs=1e-14, epsrel=1e-12)
    def quad(g):
        total = 0.0
        for a, b in zip([lo] + pts, pts + [hi]):
            if b > a:
                total += integrate.quad(g, a, b, **kw)[0]
        return total
    p = quad(lambda x: ft(x) * stats.beta.cdf(x, ac, bc))
    # E[max(c - t, 0)] = ∫ f_t(x) [μ_c·S_{a+1}(x) − x·S_a(x)] dx with S the Beta survival function.
    risk = quad(lambda x: ft(x) * (mc * stats.beta.sf(x, ac + 1, bc) - x * stats.beta.sf(x, ac, bc)))
    if at <= 3000:
        exact = mp.fsum(
            mp.exp(mp.log(mp.beta(ac + i, bc + bt)) - mp.log(bt + i) - mp.log(mp.beta(1 + i, bt)) - mp.log(mp.beta(ac, bc)))
            for i in range(int(at))
        )
        # The sum is P(p_t > p_c) for integer a_t.
        check("beta exact vs quad", exact, p, 0, 1e-9)
        p = f(exact)
    return p, risk, risk + mt - mc


EPS = 2.0 ** -52


def moments(n, s, ss):
    n, s, ss = mp.mpf(n), mp.mpf(s), mp.mpf(ss)
    mean = s / n
    centred = ss - s * s / n
    # Within the rounding noise of the sums (16 ulp of Σx²) the spread is taken as zero,
    # as the engine does: identical values must not produce a spurious variance.
    var = centred / (n - 1) if n >= 2 and centred > 16 * EPS * abs(ss) else mp.mpf(0)
    return n, mean, var


def empty(names):
    return {k: None for k in names}


FIELDS = ["diff", "diff_ci", "relative", "relative_ci", "p_value", "sequential_ci",
          "sequential_p_value", "chance_to_beat_control", "risk", "risk_control"]


def conversion(c, t, alpha, tuning, gb=None):
    nc, xc, nt, xt = c["users"], c["conversions"], t["users"], t["conversions"]
    out = {"rate": f(mp.mpf(xt) / nt) if nt >= 1 else None}
    out.update(empty(FIELDS))
    if nc < 2 or nt < 2:
        if nc >= 1 and nt >= 1:
            out["diff"] = f(mp.mpf(xt) / nt - mp.mpf(xc) / nc)
        return out
    pc, pt = mp.mpf(xc) / nc, mp.mpf(xt) / nt
    diff = pt - pc
    out["diff"] = f(diff)
    z = z_crit(alpha)
    pooled = mp.mpf(xc + xt) / (nc + nt)
    se_p = mp.sqrt(pooled * (1 - pooled) * (mp.mpf(1) / nc + mp.mpf(1) / nt))
    if se_p > 0:
        p = mp.erfc(abs(diff / se_p) / mp.sqrt(2))
        out["p_value"] = f(p)
        _, lib = proportions_ztest([xt, xc], [nt, nc])
        check("proportions_ztest", p, lib, 1e-9 if p > 1e-250 else 1e-6)
    vc, vt = pc * (1 - pc) / nc, pt * (1 - pt) / nt
    se = mp.sqrt(vc + vt)
    if se > 0:
        out["diff_ci"] = [f(diff - z * se), f(diff + z * se)]
        lo, hi = confint_proportions_2indep(xt, nt, xc, nc, method="wald", compare="diff", alpha=alpha)
        check("confint wald lo", diff - z * se, lo, 1e-9, 1e-15)
        check("confint wald hi", diff + z * se, hi, 1e-9, 1e-15)
        ci, sp = sequential(diff, se, nc + nt, alpha, tuning)
        out["sequential_ci"] = [f(ci[0]), f(ci[1])]
        out["sequential_p_value"] = f(sp)
        if gb is not None and gb.get("error") is None:
            check("gbstats sequential (proportion) lo", ci[0], gb["ci"][0], 1e-9, 1e-15)
            check("gbstats sequential (proportion) hi", ci[1], gb["ci"][1], 1e-9, 1e-15)
            if sp > 1e-250:
                check("gbstats sequential (proportion) p", sp, gb["p_value"], 1e-9)
    if pc > 0:
        rel = diff / pc
        out["relative"] = f(rel)
        var = vt / pc**2 + pt**2 * vc / pc**4
        if var > 0:
            out["relative_ci"] = [f(rel - z * mp.sqrt(var)), f(rel + z * mp.sqrt(var))]
    p, risk, risk_c = beta_bayes(xc, nc, xt, nt)
    out["chance_to_beat_control"], out["risk"], out["risk_control"] = p, risk, risk_c
    return out


def mean_compare(c, t, alpha, tuning, base=None, gb=None, seq_gb=None):
    """c, t = (n, mean, var) in mpmath; gb = gbstats result to cross-check."""
    (nc, mc, vc), (nt, mt, vt) = c, t
    out = empty(FIELDS)
    if nc < 2 or nt < 2:
        if nc >= 1 and nt >= 1:
            out["diff"] = f(mt - mc)
        return out
    diff = mt - mc
    out["diff"] = f(diff)
    vmc, vmt = vc / nc, vt / nt
    var = vmc + vmt
    bc, bt = base if base else (mc, mt)
    if var > 0:
        se = mp.sqrt(var)
        df = var**2 / (vmc**2 / (nc - 1) + vmt**2 / (nt - 1))
        p = 2 * t_sf(abs(diff / se), df)
        out["p_value"] = f(min(p, 1))
        half = t_isf(mp.mpf(alpha) / 2, df) * se
        out["diff_ci"] = [f(diff - half), f(diff + half)]
        ci, sp = sequential(diff, se, nc + nt, alpha, tuning)
        out["sequential_ci"] = [f(ci[0]), f(ci[1])]
        out["sequential_p_value"] = f(sp)
        if seq_gb is not None and seq_gb.get("error") is None:
            check("gbstats sequential lo", ci[0], seq_gb["ci"][0], 1e-9, 1e-12)
            check("gbstats sequential hi", ci[1], seq_gb["ci"][1], 1e-9, 1e-12)
            if sp > 1e-250:
                check("gbstats sequential p", sp, seq_gb["p_value"], 1e-9)
        ctb, risk, risk_c = normal_bayes(diff, se)
        out["chance_to_beat_control"], out["risk"], out["risk_control"] = f(ctb), f(risk), f(risk_c)
        if gb is not None and gb.get("error") is None:
            check("gbstats diff", diff, gb["expected"], 1e-9, 1e-12)
            check("gbstats ci lo", diff - half, gb["ci"][0], 1e-8, 1e-12)
            check("gbstats ci hi", diff + half, gb["ci"][1], 1e-8, 1e-12)
            if p > 1e-6:
                check("gbstats p", p, gb["p_value"], 1e-7)
    if bc != 0:
        rel = diff / bc
        out["relative"] = f(rel)
        v = vmt / bc**2 + bt**2 * vmc / bc**4
        if v > 0:
            z = z_crit(alpha)
            out["relative_ci"] = [f(rel - z * mp.sqrt(v)), f(rel + z * mp.sqrt(v))]
    return out


def revenue(c, t, alpha, tuning, seq_gb=None, gb=None):
    mc = moments(c["users"], c["revenue"]["sum"], c["revenue"]["sum_squares"])
    mt = moments(t["users"], t["revenue"]["sum"], t["revenue"]["sum_squares"])
    out = {"mean": f(mt[1]) if t["users"] >= 1 else None}
    out.update(mean_compare(mc, mt, alpha, tuning, gb=gb, seq_gb=seq_gb))
    if mc[2] + mt[2] > 0 and c["users"] >= 2 and t["users"] >= 2:
        lib = stats.ttest_ind_from_stats(f(mt[1]), math.sqrt(f(mt[2])), t["users"], f(mc[1]), math.sqrt(f(mc[2])),
                                         c["users"], equal_var=False).pvalue
        check("ttest_ind_from_stats", out["p_value"], lib, 1e-9 if out["p_value"] > 1e-290 else 1e-6)
    return out


GB = []  # gbstats requests, resolved in a batch


def cuped_sums(v):
    return {"n": v["users"], "sum": v["revenue"]["sum"], "sum_squares": v["revenue"]["sum_squares"],
            "pre_sum": v["pre"]["sum"], "pre_sum_squares": v["pre"]["sum_squares"],
            "sum_products": v["pre"]["sum_products"]}


def cuped(c, t, alpha, tuning, gb):
    a, b = cuped_sums(c), cuped_sums(t)
    n = mp.mpf(a["n"] + b["n"])
    sy, syy = mp.mpf(a["sum"]) + b["sum"], mp.mpf(a["sum_squares"]) + b["sum_squares"]
    sx, sxx = mp.mpf(a["pre_sum"]) + b["pre_sum"], mp.mpf(a["pre_sum_squares"]) + b["pre_sum_squares"]
    sxy = mp.mpf(a["sum_products"]) + b["sum_products"]
    var_x, var_y = sxx - sx * sx / n, syy - sy * sy / n
    theta = (sxy - sx * sy / n) / var_x if var_x > 0 and var_y > 0 else mp.mpf(0)
    check("gbstats theta", theta, gb["theta"], 1e-9, 1e-15)

    def adj(d):
        nn, my, vy = moments(d["n"], d["sum"], d["sum_squares"])
        _, mx, vx = moments(d["n"], d["pre_sum"], d["pre_sum_squares"])
        cov = (mp.mpf(d["sum_products"]) - mp.mpf(d["sum"]) * d["pre_sum"] / nn) / (nn - 1)
        return (nn, my - theta * mx, max(vy + theta**2 * vx - 2 * theta * cov, mp.mpf(0))), my
    (ac, uc), (at, ut) = adj(a), adj(b)
    out = {"theta": f(theta), "mean": f(at[1])}
    out.update(mean_compare(ac, at, alpha, tuning, base=(uc, ut), gb=gb))
    return out


def ratio_sums(v):
    p = v["predictions"]
    return {"n": v["users"], "m_sum": v["conversions"], "m_sum_squares": v["conversions"],
            "d_sum": p["sum"], "d_sum_squares": p["sum_squares"], "sum_products": p["sum_products"]}


def ratio(c, t, alpha, tuning, gb):
    def mom(d):
        n, mm, vm = moments(d["n"], d["m_sum"], d["m_sum_squares"])
        _, md, vd = moments(d["n"], d["d_sum"], d["d_sum_squares"])
        cov = (mp.mpf(d["sum_products"]) - mp.mpf(d["m_sum"]) * d["d_sum"] / n) / (n - 1)
        var = vm / md**2 + vd * mm**2 / md**4 - 2 * cov * mm / md**3
        return n, mp.mpf(d["m_sum"]) / d["d_sum"], max(var, mp.mpf(0))
    mc, mt = mom(ratio_sums(c)), mom(ratio_sums(t))
    check("gbstats ratio var a", mc[2], gb["var_a"], 1e-8, 1e-15)
    out = {"ratio": f(mt[1])}
    out.update(mean_compare(mc, mt, alpha, tuning, gb=gb))
    return out


def analyze(doc, gb_results):
    alpha = doc.get("alpha", 0.05)
    tuning = doc.get("sequential_tuning", 5000)
    variants = doc["variants"]
    ckey = doc.get("control", "control")
    ctl = next(v for v in variants if v["key"] == ckey)
    weights = doc.get("weights") or {v["key"]: 1 for v in variants}
    users = [v["users"] for v in variants]
    w = [weights[v["key"]] for v in variants]
    exp = [sum(users) * x / sum(w) for x in w]
    chi = mp.fsum((mp.mpf(o) - e) ** 2 / e for o, e in zip(users, exp))
    p_srm = chi2_sf(chi, len(users) - 1)
    check("scipy chisquare", p_srm, stats.chisquare(users, exp).pvalue, 1e-9)
    out = {"alpha": alpha, "srm": {"p_value": f(p_srm), "mismatch": bool(p_srm < 0.001), "chi_square": f(chi)}}
    outs, family = [], []
    for v in variants:
        if v is ctl:
            continue
        o = {"key": v["key"], "users": v["users"]}
        o["conversion"] = conversion(ctl, v, alpha, tuning, gb_results.get((v["key"], "seq_conv")))
        o["revenue_per_user"] = (revenue(ctl, v, alpha, tuning, gb_results.get((v["key"], "seq_rev")),
                                         gb_results.get((v["key"], "welch")))
                                 if "revenue" in v else None)
        if "pre" in v:
            o["revenue_per_user_cuped"] = cuped(ctl, v, alpha, tuning, gb_results[(v["key"], "cuped")])
        if "predictions" in v:
            o["conversions_per_prediction"] = ratio(ctl, v, alpha, tuning, gb_results[(v["key"], "ratio")])
        for m in ["conversion", "revenue_per_user", "conversions_per_prediction"]:
            if o.get(m) is not None and o[m]["p_value"] is not None:
                family.append((len(outs), m, o[m]["p_value"]))
        outs.append(o)
    ps = [p for _, _, p in family]
    adj = {}
    if ps:
        adj["holm"] = multipletests(ps, method="holm")[1]
        adj["benjamini_hochberg"] = multipletests(ps, method="fdr_bh")[1]
    for o in outs:
        o["adjusted_p_values"] = {meth: {m: None for m in ["conversion", "revenue_per_user", "conversions_per_prediction"]
                                         if o.get(m) is not None} for meth in ["holm", "benjamini_hochberg"]}
    for k, (i, m, _) in enumerate(family):
        for meth in adj:
            outs[i]["adjusted_p_values"][meth][m] = float(adj[meth][k])
    out["variants"] = outs
    base = doc.get("baseline_rate", ctl["conversions"] / ctl["users"])
    power = {"baseline_rate": base, "relative_mde": doc.get("mde"), "alpha": alpha, "power": doc.get("power", 0.8)}
    if doc.get("mde") is not None:
        p2 = base * (1 + doc["mde"])
        h = abs(proportion_effectsize(p2, base))
        n = NormalIndPower().solve_power(effect_size=h, alpha=alpha, power=power["power"], ratio=1,
                                         alternative="two-sided")
        # Exact root of the same equation, to full precision.
        za = z_crit(alpha)
        hm = abs(2 * mp.asin(mp.sqrt(mp.mpf(p2))) - 2 * mp.asin(mp.sqrt(mp.mpf(base))))
        d = mp.findroot(lambda d: q_norm(za - d) + q_norm(za + d) - power["power"], mp.mpf(za + 0.84))
        nm = 2 * (d / hm) ** 2
        check("NormalIndPower", nm, float(n), 1e-6)
        power.update({"effect_size": f(hm), "users_per_variant": f(nm), "users_per_variant_ceil": math.ceil(f(nm)),
                      "share_reached": f(min(users) / nm)})
    else:
        power.update({"effect_size": None, "users_per_variant": None, "users_per_variant_ceil": None,
                      "share_reached": None})
    out["power"] = power
    return out


# ---------------------------------------------------------------- cases

def revenue_from_data(rng, n, mean, sd, outliers=()):
    x = np.maximum(rng.normal(mean, sd, size=n), 0.0)
    for i, v in enumerate(outliers):
        x[i] = v
    return x


def variant(key, users, conversions, rev=None, pre=None, predictions=None):
    v = {"key": key, "users": users, "conversions": conversions}
    if rev is not None:
        v["revenue"] = {"sum": float(rev[0]), "sum_squares": float(rev[1])}
    if pre is not None:
        v["pre"] = {"sum": float(pre[0]), "sum_squares": float(pre[1]), "sum_products": float(pre[2])}
    if predictions is not None:
        v["predictions"] = {"sum": float(predictions[0]), "sum_squares": float(predictions[1]),
                            "sum_products": float(predictions[2])}
    return v


def moments_rev(n, mean, sd):
    """Sums consistent with n users of mean `mean` and sd `sd` (for sizes too big to simulate)."""
    return n * mean, n * (sd * sd * (n - 1) / n + mean * mean)


def data_variant(rng, key, n, rate, mean, sd, pre_corr=None, pred_mean=None, outliers=()):
    conv = rng.random(n) < rate
    rev = revenue_from_data(rng, n, mean, sd, outliers) * conv if mean is not None else None
    v = variant(key, n, int(conv.sum()))
    if rev is not None:
        v["revenue"] = {"sum": float(rev.sum()), "sum_squares": float((rev * rev).sum())}
    if pre_corr is not None:
        pre = pre_corr * rev + rng.normal(1.0, 2.0, size=n)
        v["pre"] = {"sum": float(pre.sum()), "sum_squares": float((pre * pre).sum()),
                    "sum_products": float((pre * rev).sum())}
    if pred_mean is not None:
        pred = rng.poisson(pred_mean, size=n).astype(float)
        v["predictions"] = {"sum": float(pred.sum()), "sum_squares": float((pred * pred).sum()),
                            "sum_products": float((pred * conv).sum())}
    return v


def cases():
    rng = np.random.default_rng(20261125)
    out = []
    add = lambda name, doc: out.append({"name": name, "input": doc})
    add("basic two arms", {"alpha": 0.05, "control": "control", "weights": {"control": 0.5, "treatment": 0.5},
                           "mde": 0.1, "variants": [
                               variant("control", 10000, 1000, moments_rev(10000, 5.2345, 12.0)),
                               variant("treatment", 10000, 1100, moments_rev(10000, 5.5345, 12.5))]})
    add("four variants three metrics with CUPED", {
        "alpha": 0.05, "control": "control", "mde": 0.05,
        "weights": {"control": 0.25, "a": 0.25, "b": 0.25, "c": 0.25},
        "variants": [data_variant(rng, k, 4000 + 37 * i, 0.1 + 0.01 * i, 40.0, 25.0, pre_corr=0.6, pred_mean=3.0)
                     for i, k in enumerate(["control", "a", "b", "c"])]})
    add("smallest arms n = 2", {"variants": [variant("control", 2, 1, (10.0, 100.0)), variant("t", 2, 2, (30.0, 500.0))]})
    add("n = 1e9, rate 1e-6", {"mde": 0.1, "variants": [
        variant("control", 1_000_000_000, 1000, moments_rev(1e9, 0.01, 3.0)),
        variant("treatment", 1_000_000_000, 1150, moments_rev(1e9, 0.0102, 3.1))]})
    add("rate 0.999", {"variants": [variant("control", 50000, 49950), variant("treatment", 50000, 49970)]})
    add("zero conversions in treatment", {"variants": [variant("control", 3000, 12), variant("treatment", 3000, 0)]})
    add("zero conversions in control", {"variants": [variant("control", 3000, 0, (0.0, 0.0)),
                                                      variant("treatment", 3000, 7, (350.0, 20000.0))]})
    add("zero conversions anywhere", {"variants": [variant("control", 500, 0, (0.0, 0.0)), variant("treatment", 700, 0, (0.0, 0.0))]})
    add("everyone converts", {"variants": [variant("control", 800, 800), variant("treatment", 900, 900)]})
    out_rng = np.random.default_rng(7)
    add("huge revenue outlier", {"variants": [
        data_variant(out_rng, "control", 5000, 0.2, 30.0, 10.0),
        data_variant(out_rng, "treatment", 5000, 0.2, 30.0, 10.0, outliers=(2.5e6,))]})
    add("sample ratio mismatch", {"weights": {"control": 0.5, "treatment": 0.5},
                                  "variants": [variant("control", 1000, 100), variant("treatment", 1200, 130)]})
    add("unequal weights three arms", {"weights": {"control": 0.5, "b": 0.25, "c": 0.25}, "variants": [
        variant("control", 20000, 2000, moments_rev(20000, 3.0, 9.0)),
        variant("b", 10100, 1050, moments_rev(10100, 3.2, 9.5)),
        variant("c", 9900, 940, moments_rev(9900, 2.9, 8.0))]})
    add("alpha 0.01 and N* 10000", {"alpha": 0.01, "sequential_tuning": 10000, "mde": 0.02, "power": 0.9,
                                     "baseline_rate": 0.05, "variants": [
                                         variant("control", 100000, 5000, moments_rev(100000, 2.0, 7.0)),
                                         variant("treatment", 100000, 5250, moments_rev(100000, 2.1, 7.0))]})
    add("p-value near 1e-290", {"variants": [variant("control", 1_000_000_000, 100_000_000),
                                             variant("treatment", 1_000_000_000, 100_485_000)]})
    add("small Welch df", {"variants": [variant("control", 3, 1, (5.0, 25.0)), variant("treatment", 5, 3, (40.0, 900.0))]})
    add("control listed second", {"control": "base", "variants": [
        variant("new", 12000, 1300, moments_rev(12000, 4.0, 10.0)),
        variant("base", 12100, 1210, moments_rev(12100, 3.9, 10.0))]})
    add("gbstats test vectors as revenue", {"variants": [
        variant("control", 3407, 1000, (1396.87, 52377.9767)), variant("treatment", 3461, 1100, (2422.7, 134698.29))]})
    same = lambda n, v: (float(np.sum(np.full(n, v))), float(np.sum(np.full(n, v) ** 2)))
    add("identical revenue per user", {"variants": [variant("control", 1000, 1000, same(1000, 9.99)),
                                                    variant("treatment", 1000, 1000, same(1000, 9.99))]})
    add("n = 1e9, 0 vs 3 conversions", {"variants": [variant("control", 1_000_000_000, 0),
                                                     variant("treatment", 1_000_000_000, 3)]})
    add("very unequal arms", {"weights": {"control": 0.99, "treatment": 0.01}, "variants": [
        variant("control", 990_000, 49_500, moments_rev(990_000, 2.5, 6.0)),
        variant("treatment", 100, 7, moments_rev(100, 3.5, 8.0))]})
    add("alpha 0.2, N* 1000", {"alpha": 0.2, "sequential_tuning": 1000, "variants": [
        variant("control", 800, 80, moments_rev(800, 1.0, 2.0)), variant("treatment", 820, 95, moments_rev(820, 1.1, 2.0))]})
    for i in range(10):
        k = int(rng.integers(2, 5))
        n = [int(x) for x in rng.integers(50, 200000, size=k)]
        rate = float(rng.uniform(0.001, 0.5))
        mean, sd = float(rng.uniform(1, 100)), float(rng.uniform(1, 200))
        # Effects of a few percent, so the p-values span the interesting range.
        vs = [variant("control" if j == 0 else f"v{j}", n[j], int(rng.binomial(n[j], rate * (1 + 0.02 * j))),
                      moments_rev(n[j], mean * (1 + 0.01 * j), sd)) for j in range(k)]
        add(f"random {i}", {"alpha": float(rng.choice([0.01, 0.05, 0.1])), "mde": float(rng.uniform(0.02, 0.3)),
                            "variants": vs})
    return out


def gb_requests(docs):
    reqs, keys = [], []
    for ci, doc in enumerate(docs):
        vs = doc["input"]["variants"]
        ctl = next(v for v in vs if v["key"] == doc["input"].get("control", "control"))
        alpha = doc["input"].get("alpha", 0.05)
        tuning = doc["input"].get("sequential_tuning", 5000)
        for v in vs:
            if v is ctl:
                continue
            # gbstats divides by zero where the spec says null; ask it only where defined.
            if min(v["users"], ctl["users"]) >= 2 and 0 < v["conversions"] + ctl["conversions"]:
                pc, pt = ctl["conversions"] / ctl["users"], v["conversions"] / v["users"]
                if pc * (1 - pc) + pt * (1 - pt) > 0 and pc > 0:
                    reqs.append({"kind": "sequential_prop", "alpha": alpha, "tuning": tuning,
                                 "a": {"n": ctl["users"], "sum": ctl["conversions"]},
                                 "b": {"n": v["users"], "sum": v["conversions"]}})
                    keys.append((ci, v["key"], "seq_conv"))
            if "revenue" in v and min(v["users"], ctl["users"]) >= 2 and ctl["revenue"]["sum"] != 0:
                reqs.append({"kind": "sequential", "alpha": alpha, "tuning": tuning,
                             "a": {"n": ctl["users"], **ctl["revenue"]}, "b": {"n": v["users"], **v["revenue"]}})
                keys.append((ci, v["key"], "seq_rev"))
                reqs.append({"kind": "welch", "alpha": alpha,
                             "a": {"n": ctl["users"], **ctl["revenue"]}, "b": {"n": v["users"], **v["revenue"]}})
                keys.append((ci, v["key"], "welch"))
            if "pre" in v:
                reqs.append({"kind": "cuped", "alpha": alpha, "a": cuped_sums(ctl), "b": cuped_sums(v)})
                keys.append((ci, v["key"], "cuped"))
            if "predictions" in v:
                reqs.append({"kind": "ratio", "alpha": alpha, "a": ratio_sums(ctl), "b": ratio_sums(v)})
                keys.append((ci, v["key"], "ratio"))
    return reqs, keys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb-python", default=os.path.expanduser("~/.cache/verdict-py-gb/bin/python"))
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    docs = cases()
    reqs, keys = gb_requests(docs)
    gb_version = None
    try:
        res = subprocess.run([args.gb_python, os.path.join(os.path.dirname(__file__), "gbstats_oracle.py")],
                             input=json.dumps(reqs), capture_output=True, text=True, check=True)
        gb = json.loads(res.stdout)
        gb_version = subprocess.run([args.gb_python, "-c", "import importlib.metadata as m; print(m.version('gbstats'))"],
                                    capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"gbstats oracle failed ({e}); install it in its own virtualenv, see the docstring")
    by_case = {}
    for (ci, key, kind), r in zip(keys, gb):
        by_case.setdefault(ci, {})[(key, kind)] = r
    for ci, doc in enumerate(docs):
        doc["expected"] = analyze(doc["input"], by_case.get(ci, {}))
    meta = {"generator": "scripts/stats/gen_fixtures.py", "scipy": scipy.__version__,
            "statsmodels": statsmodels.__version__, "mpmath": mp.__version__, "gbstats": gb_version,
            "numpy": np.__version__}
    with open(os.path.join(OUT, "analyze_cases.json"), "w") as fh:
        json.dump({"meta": meta, "cases": docs}, fh, indent=1)
        fh.write("\n")
    with open(os.path.join(OUT, "distributions.json"), "w") as fh:
        json.dump({"meta": meta, **distributions()}, fh, indent=1)
        fh.write("\n")
    print(f"wrote {len(docs)} analysis cases and the distribution tables to {OUT}")
    print("library cross-checks passed:", ", ".join(f"{k} ×{v}" for k, v in sorted(CHECKS.items())))


if __name__ == "__main__":
    main()
