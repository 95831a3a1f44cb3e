"""The billing web page: server-rendered HTML over the reports layer, for operators.

``create_billing_web(ctx)`` is an ASGI app (Starlette + Jinja2, no script, no asset from
the network) that ``create_admin_app(ctx, ui=...)`` mounts at ``/ui``. See docs/web.md.
"""

from ._app import COOKIE_NAME, create_billing_web

__all__ = ["COOKIE_NAME", "create_billing_web"]
