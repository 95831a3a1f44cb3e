import pytest

from metering_middleware.admin import MIN_TOKEN_LENGTH, AdminTokens, TokenError

A = "a" * 32
B = "B7f-" + "x" * 40


def test_every_configured_token_matches_and_nothing_else() -> None:
    tokens = AdminTokens([A, B])
    assert tokens.matches(A) and tokens.matches(B) and tokens.matches(A.encode())
    assert not tokens.matches(A[:-1]) and not tokens.matches(A + "a")
    assert not tokens.matches("") and not tokens.matches(None)
    assert not tokens.matches(B.upper())


def test_bearer_header() -> None:
    tokens = AdminTokens([A])
    assert tokens.bearer(f"Bearer {A}") and tokens.bearer(f"bearer {A}".encode())
    assert not tokens.bearer(f"Basic {A}") and not tokens.bearer(A) and not tokens.bearer(None)
    assert not tokens.bearer("Bearer ")


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["x" * (MIN_TOKEN_LENGTH - 1)], "at least 32"),
        ([], "no admin token"),
        (["a" * 20 + " " + "b" * 20], "spaces"),
        ([A, "short"], "#2"),
    ],
)
def test_unusable_tokens_are_refused(tokens: list[str], message: str) -> None:
    with pytest.raises(TokenError, match=message):
        AdminTokens(tokens)


def test_parse_separators_comments_and_repr_hides_tokens() -> None:
    tokens = AdminTokens.parse(f"# rotated 2026-12\n{A}, {B}\n\n")
    assert len(tokens) == 2 and tokens.matches(B)
    assert A not in repr(tokens) and B not in repr(tokens)


def test_match_index_and_per_token_keys() -> None:
    tokens = AdminTokens([A, B])
    assert tokens.match_index(A) == 0 and tokens.match_index(B) == 1
    assert tokens.match_index(A[:-1]) is None and tokens.match_index(None) is None
    keys = tokens.derive_keys("web")
    assert len(set(keys)) == 2 and keys != tokens.derive_keys("cursor")
    # A token's key does not depend on the tokens beside it, nor on their order.
    assert AdminTokens([B, A]).derive_keys("web") == (keys[1], keys[0])
    assert AdminTokens([A]).derive_keys("web") == (keys[0],)
    assert all(A.encode() not in k and B.encode() not in k for k in keys)
