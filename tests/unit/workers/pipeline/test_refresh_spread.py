"""A scheduled refresh spreads the due time of each URL over a quarter of the period."""

from __future__ import annotations

from workers.pipeline.refresh import SPREAD, _fraction


def test_each_url_has_a_stable_place_in_the_spread() -> None:
    urls = [f"https://cdn.test/{n}.jpg" for n in range(2000)]
    places = [_fraction(url) for url in urls]
    assert places == [_fraction(url) for url in urls]  # the same at every run
    assert all(0 <= p < 1 for p in places)
    # Spread over the whole window, not bunched: each tenth of it holds 7-13 % of the URLs
    for tenth in range(10):
        share = sum(tenth / 10 <= p < (tenth + 1) / 10 for p in places) / len(places)
        assert 0.07 <= share <= 0.13
    assert SPREAD == 0.25
