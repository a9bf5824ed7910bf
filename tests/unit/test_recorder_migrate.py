"""The migration's pure part: which stored point becomes which rewritten point (python -m nodes.recorder migrate)."""

from __future__ import annotations

import pytest

from nodes.recorder.migrate import RENAMES, Outcome, hint, main, migrated_line

SCHEDULE, PLAN, PRICES = RENAMES


def test_an_old_point_gets_the_new_names_and_eur() -> None:
    line = migrated_line(PRICES, {"zone": "de-lu"}, 1_736_985_600_000_000,
                         {"price_eur_per_mwh": 100, "price_per_mwh": None, "currency": None})
    assert line == 'prices,zone=de-lu price_per_mwh=100.0,currency="EUR" 1736985600000000'


def test_tags_are_escaped_and_empty_ones_left_out() -> None:
    line = migrated_line(SCHEDULE, {"battery": "b 1", "plan_id": "p,1", "spare": ""}, 5,
                         {"price_eur_per_mwh": -500.25, "currency": None})
    assert line == 'schedule,battery=b\\ 1,plan_id=p\\,1 price_per_mwh=-500.25,currency="EUR" 5'


def test_plans_carry_both_amounts_and_an_absent_baseline_stays_absent() -> None:
    both = migrated_line(PLAN, {"battery": "b1"}, 7, {"expected_revenue_eur": 12.5, "baseline_revenue_eur": 8})
    assert both == 'plan,battery=b1 expected_revenue=12.5,baseline_revenue=8.0,currency="EUR" 7'
    alone = migrated_line(PLAN, {"battery": "b1"}, 7, {"expected_revenue_eur": 12.5, "baseline_revenue_eur": None})
    assert alone == 'plan,battery=b1 expected_revenue=12.5,currency="EUR" 7'


@pytest.mark.parametrize(
    "values",
    [
        {"price_eur_per_mwh": 1.0, "price_per_mwh": 2.0, "currency": "AUD"},  # written since: newer values
        {"price_eur_per_mwh": 1.0, "currency": "EUR"},  # migrated already
        {"price_eur_per_mwh": None, "currency": None},  # nothing to carry over
    ],
)
def test_points_that_name_a_currency_or_hold_nothing_are_left_alone(values: dict[str, object]) -> None:
    assert migrated_line(PRICES, {"zone": "de-lu"}, 1, values) is None


def test_what_the_operator_reads() -> None:
    text = Outcome("prices", old=288, rewritten=287, current=1).text(dry_run=True)
    assert text == ("prices: points under the old names (price_eur_per_mwh -> price_per_mwh): 288; to rewrite with "
                    "currency EUR: 287; already naming a currency, left alone: 1")
    assert "python -m nodes.recorder migrate" in hint({"prices": 3})
    assert "(3 prices points)" in hint({"prices": 3})


def test_influx2_is_refused_with_the_way_out(capsys: pytest.CaptureFixture[str]) -> None:
    code = main([], {"BESS_STORE": "influx2", "BESS_INFLUX_TOKEN": "t", "BESS_INFLUX_ORG": "o"})
    assert code == 2
    assert "BESS_STORE=influx1" in capsys.readouterr().err
