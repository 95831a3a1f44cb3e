"""The operator's side: an admin HTTP API, the billing web page and the tokens guarding both.

Only :mod:`.tokens` is imported here: the library core must not need FastAPI. Import the
app from :mod:`metering_middleware.admin.app` (it needs the ``admin`` extra).
"""

from .tokens import MIN_TOKEN_LENGTH, AdminTokens, TokenError

__all__ = ["MIN_TOKEN_LENGTH", "AdminTokens", "TokenError"]
