import metering_middleware.rating as rating


def test_public_names_are_exactly_the_documented_ones() -> None:
    assert sorted(rating.__all__) == sorted(set(rating.__all__))
    for name in rating.__all__:
        assert hasattr(rating, name), name
    public = {n for n in dir(rating) if not n.startswith("_")}
    modules = {"deduction", "errors", "money", "months", "plans", "pricing", "results", "state"}
    modules |= {
        "balances",
        "bills",
        "cash",
        "renewals",
        "export",
        "purchases",
        "settlement",
        "store",
    }
    modules |= {"money_reads"}  # read by the request path's money view (one transaction)
    modules |= {"open"}  # rating_store_for: the rating store beside an SQLite or PostgreSQL ledger
    assert public - modules == set(rating.__all__)
