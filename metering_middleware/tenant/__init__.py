"""The tenant view: a tenant reads its own usage, plans, balance and bills.

Signed like any VIAPI call, with the tenant's own AccessKey and signature V3
(ACS3-HMAC-SHA256: the official SDKs' generic ``call_api`` works), and verified by the
meter's own verifier, nonce store and window. The account is the AccessKey's: nothing
in the path, query, headers or body can name another. See docs/tenant.md.

    app = create_tenant_app(runtime)          # a started or startable MeteringRuntime
    Mount("/tenant", app=app)                 # beside (before) the metered mount
"""

from ._app import DEFAULT_QPS, MAX_BODY_BYTES, TenantApp, create_tenant_app, tenant_view_available
from ._auth import LIMIT_CATEGORY
from ._routes import API_VERSION
from ._views import MAX_USAGE_DAYS, VIEWS, View

__all__ = [
    "API_VERSION",
    "DEFAULT_QPS",
    "LIMIT_CATEGORY",
    "MAX_BODY_BYTES",
    "MAX_USAGE_DAYS",
    "VIEWS",
    "TenantApp",
    "View",
    "create_tenant_app",
    "tenant_view_available",
]
