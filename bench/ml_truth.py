"""Check the published ML scores against what the demo generator's people really did after the as-of date.

    .venv/bin/python bench/ml_truth.py --home data        # after `make run`

Each scored person is mapped to the generator's true person through `identity.person_map` (the person's
records vote; the most common true person wins). The truth (`<home>/sources/truth/purchases.parquet`) holds
every purchase, including those after the last written day, which the warehouse never saw. Reported:
ROC-AUC and top-decile lift of the 30-day purchase and 90-day churn propensities against the real outcome,
and predicted against actual purchase days over 90 and 365 days for the CLV model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import duckdb
from sklearn.metrics import roc_auc_score

PURCHASE_DAYS = """
    select true_person_id,
        count(distinct day) filter (where day between ?::date + 1 and ?::date + 30) as d30,
        count(distinct day) filter (where day between ?::date + 1 and ?::date + 90) as d90,
        count(distinct day) filter (where day between ?::date + 1 and ?::date + 365) as d365
    from (select *, purchased_at::date as day from read_parquet(?))
    where net_amount > 0 and status not in ('cancelled', 'refunded')
    group by 1
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path("data"))
    args = parser.parse_args()
    truth = args.home / "sources" / "truth"
    con = duckdb.connect()
    con.execute(f"attach '{args.home / 'warehouse.duckdb'}' as wh (read_only)")
    as_of = con.execute("select max(as_of) from wh.ml.customer_propensity").fetchone()[0]
    con.execute(
        """create temp table person_truth as
        select person_id, arg_max(true_person_id, n) as true_person_id from (
            select map.person_id, truth.true_person_id, count(*) as n
            from wh.identity.person_map as map
            join read_parquet(?) as truth using (source_entity, source_record_id)
            group by all
        ) group by person_id""",
        [str(truth / "record_persons.parquet")],
    )
    con.execute(
        "create temp table outcome as " + PURCHASE_DAYS,
        [as_of] * 6 + [str(truth / "purchases.parquet")],
    )
    scored = con.execute(
        """select p.purchase_30d_probability, p.churn_90d_probability,
               coalesce(o.d30, 0) > 0 as bought_30d, coalesce(o.d90, 0) = 0 as churned_90d,
               c.expected_purchases_90d, c.expected_purchases_365d, coalesce(o.d90, 0), coalesce(o.d365, 0)
        from wh.ml.customer_propensity as p
        join person_truth using (person_id)
        left join outcome as o using (true_person_id)
        left join wh.ml.customer_clv as c on c.person_id = p.person_id and c.as_of = p.as_of
        where p.as_of = ?""",
        [as_of],
    ).df()
    scored.columns = ["p30", "pchurn", "bought", "churned", "e90", "e365", "a90", "a365"]
    print(f"as of {as_of}: {len(scored):,} scored persons matched to the generator's truth")
    for label, score, outcome in (("purchase 30d", "p30", "bought"), ("churn 90d", "pchurn", "churned")):
        base = scored[outcome].mean()
        top = scored.nlargest(max(len(scored) // 10, 1), score)[outcome].mean()
        auc = roc_auc_score(scored[outcome], scored[score])
        print(f"  {label:<13} ROC-AUC {auc:.3f}  base rate {base:.3f}  top-decile rate {top:.3f}  "
              f"lift {top / base:.2f}")
    clv = scored.dropna(subset=["e90"])
    for horizon in ("90", "365"):
        predicted, actual = clv[f"e{horizon}"].sum(), clv[f"a{horizon}"].sum()
        corr = clv[f"e{horizon}"].corr(clv[f"a{horizon}"])
        print(f"  CLV {horizon:>3}d purchase days: predicted {predicted:,.0f}, actual {actual:,.0f} "
              f"({predicted / actual - 1:+.1%}), per-person correlation {corr:.3f}")


if __name__ == "__main__":
    main()
