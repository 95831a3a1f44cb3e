"""The operator's side: an admin HTTP API, the billing web page and the tokens guarding both."""

from .tokens import MIN_TOKEN_LENGTH, AdminTokens, TokenError

__all__ = ["MIN_TOKEN_LENGTH", "AdminTokens", "TokenError"]
