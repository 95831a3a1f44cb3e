"""The billing web page: routes, the session guard and the state-changing forms.

    browser ──► SecurityHeaders (CSP, nosniff, ...) ──► Starlette routes
                  GET  /signin /accounts /account /refund      (session cookie, else sign-in)
                  POST /signin                                 (same origin, admin token)
                  POST /signout /topup /refund /disable-key    (same origin, session, CSRF)

Reads go through the reports layer (``_views``), writes through the rating and credential
functions the admin API calls (``cash.top_up``, ``renewals.refund``,
``CredentialManager.disable``): the page implements no rule of its own. A refused post
(another origin, no session, not one of the page's forms, a missing or wrong CSRF token)
is a 403 before any field of it is used, so it cannot write.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from ...rating.balances import BalanceError
from ...rating.cash import top_up
from ...rating.errors import RatingError
from ...rating.months import Month, billing_month
from ...rating.purchases import show_plan
from ...rating.renewals import quote_refund, refund
from ...rating.settlement import SettleBusy
from ...reports import ReportError, UnknownAccount, accounts
from ..context import AdminContext
from ._forms import FormError, read_form
from ._render import Templates
from ._security import SecurityHeaders, same_origin, style_hash
from ._session import DEFAULT_LIFETIME, Session, SessionCodec
from ._views import account_view

__all__ = ["COOKIE_NAME", "SESSION_PURPOSE", "create_billing_web"]

COOKIE_NAME = "metering_session"
#: ``AdminTokens.derive_keys`` purpose of the session keys (and so of the CSRF tokens).
SESSION_PURPOSE = "billing-web session v1"
#: Accounts per page of the list.
PAGE_SIZE = 50

# Outcome messages are chosen by a fixed code in the redirect, never echoed from it.
_FLASH = {
    "topup": "Top-up posted.",
    "topup-again": "This top-up was posted before: nothing added.",
    "refund": "Plan refunded.",
    "disabled": "AccessKey disabled.",
}


class _Page:
    """The handlers, sharing the context, the session codec and the templates."""

    def __init__(self, ctx: AdminContext, lifetime: timedelta) -> None:
        self.ctx = ctx
        self.templates = Templates()
        # One key per token: a session lives exactly as long as the token it signed in
        # with is configured (adding a token, or removing another, signs nobody out).
        self.sessions = SessionCodec(
            lambda: ctx.tokens.derive_keys(SESSION_PURPOSE), ctx.clock, lifetime=lifetime
        )

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def prefix(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def session(self, request: Request) -> Session | None:
        return self.sessions.read(request.cookies.get(COOKIE_NAME))

    def html(
        self,
        request: Request,
        name: str,
        *,
        status: int = 200,
        session: Session | None = None,
        **context: Any,
    ) -> HTMLResponse:
        context.setdefault("flash", None)
        context.setdefault("error", None)
        body = self.templates.render(name, prefix=self.prefix(request), session=session, **context)
        return HTMLResponse(body, status_code=status)

    def message(
        self, request: Request, heading: str, status: int, session: Session | None = None
    ) -> HTMLResponse:
        return self.html(request, "message.html", status=status, session=session, heading=heading)

    def to_signin(self, request: Request) -> Response:
        response = RedirectResponse(f"{self.prefix(request)}/signin", status_code=303)
        response.delete_cookie(COOKIE_NAME, path=self.cookie_path(request))
        return response

    def cookie_path(self, request: Request) -> str:
        return self.prefix(request) or "/"

    def to_account(self, request: Request, name: str, done: str) -> Response:
        query = urlencode({"name": name, "done": done})
        return RedirectResponse(f"{self.prefix(request)}/account?{query}", status_code=303)

    async def guarded_post(self, request: Request) -> tuple[Session, dict[str, str]] | Response:
        """The session and fields of a legitimate post, else the 403 (or 400) to answer."""
        if not same_origin(request.scope):
            return self.message(request, "Forbidden: a post from another origin", 403)
        session = self.session(request)
        if session is None:
            return self.message(request, "Forbidden: not signed in", 403)
        try:
            fields = await read_form(request)
        except FormError as exc:  # none of the page's forms: no token could be read from it
            return self.message(request, f"Forbidden: {exc}", 403, session)
        if not session.csrf_matches(fields.get("csrf")):
            return self.message(request, "Forbidden: a missing or wrong CSRF token", 403)
        return session, fields

    # -- sign-in -----------------------------------------------------------------------------

    async def signin_form(self, request: Request) -> Response:
        if self.session(request) is not None:
            return RedirectResponse(f"{self.prefix(request)}/accounts", status_code=303)
        return self.html(request, "signin.html")

    async def signin(self, request: Request) -> Response:
        if not same_origin(request.scope):
            return self.message(request, "Forbidden: a post from another origin", 403)
        try:
            token = (await read_form(request)).get("token", "")
        except FormError as exc:
            return self.html(request, "signin.html", status=400, error=str(exc))
        tokens = self.ctx.tokens
        which = tokens.match_index(token.strip())
        if which is None:
            error = "That is not an admin token."
            return self.html(request, "signin.html", status=401, error=error)
        value, _ = self.sessions.issue(tokens.derive_keys(SESSION_PURPOSE)[which])
        response = RedirectResponse(f"{self.prefix(request)}/accounts", status_code=303)
        response.set_cookie(
            COOKIE_NAME,
            value,
            max_age=int(self.sessions.lifetime.total_seconds()),
            path=self.cookie_path(request),
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    async def signout(self, request: Request) -> Response:
        guarded = await self.guarded_post(request)
        if isinstance(guarded, Response):
            return guarded
        self.sessions.revoke(guarded[0])
        return self.to_signin(request)

    # -- pages -------------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return RedirectResponse(f"{self.prefix(request)}/accounts", status_code=303)

    async def accounts(self, request: Request) -> Response:
        session = self.session(request)
        if session is None:
            return self.to_signin(request)
        search = request.query_params.get("q", "").strip() or None
        offset_text = request.query_params.get("offset", "0")
        offset = int(offset_text) if offset_text.isdigit() and len(offset_text) < 10 else 0
        try:
            page = await accounts(
                self.ctx.ledger_path, search=search, limit=PAGE_SIZE, offset=offset
            )
        except ReportError as exc:
            return self.message(request, f"Bad request: {exc}", 400, session)
        return self.html(request, "accounts.html", session=session, page=page, search=search)

    async def account(self, request: Request) -> Response:
        session = self.session(request)
        if session is None:
            return self.to_signin(request)
        name = request.query_params.get("name", "")
        try:
            month_text = request.query_params.get("month")
            month = Month.parse(month_text) if month_text else billing_month(self.ctx.clock.now())
        except ValueError as exc:
            return self.message(request, f"Bad request: {exc}", 400, session)
        return await self.render_account(request, session, name, month)

    async def render_account(
        self,
        request: Request,
        session: Session,
        name: str,
        month: Month,
        *,
        error: str | None = None,
        status: int = 200,
    ) -> Response:
        try:
            view = await account_view(self.ctx, name, month)
        except UnknownAccount:
            return self.message(request, "No such account", 404, session)
        except ReportError as exc:
            return self.message(request, f"Bad request: {exc}", 400, session)
        flash = _FLASH.get(request.query_params.get("done", ""))
        return self.html(
            request,
            "account.html",
            status=status,
            session=session,
            view=view,
            flash=None if error else flash,
            error=error,
        )

    async def refund_quote(self, request: Request) -> Response:
        session = self.session(request)
        if session is None:
            return self.to_signin(request)
        name = request.query_params.get("name", "")
        plan_id = request.query_params.get("plan", "")
        try:
            plan = await show_plan(await self.ctx.ratings(), plan_id)
            if plan.plan.account != name:
                return self.message(request, "No such plan for this account", 404, session)
            quote = await quote_refund(
                await self.ctx.ratings(),
                self.ctx.catalog,
                plan_id,
                clock=self.ctx.clock,
                settle_first=False,  # a GET writes nothing; the refund itself settles first
            )
        except RatingError as exc:
            return self.message(request, f"Cannot refund: {exc}", 400, session)
        return self.html(request, "refund.html", session=session, account=name, quote=quote)

    # -- state-changing forms ------------------------------------------------------------------

    async def topup(self, request: Request) -> Response:
        guarded = await self.guarded_post(request)
        if isinstance(guarded, Response):
            return guarded
        session, fields = guarded
        name = fields.get("name", "")
        try:
            _, posted = await top_up(
                await self.ctx.ratings(),
                name,
                fields.get("amount", "").strip(),
                key=fields.get("key") or None,
                reason="billing page",
                clock=self.ctx.clock,
            )
        except (BalanceError, RatingError, ValueError) as exc:
            month = billing_month(self.ctx.clock.now())
            return await self.render_account(
                request, session, name, month, error=f"Top-up refused: {exc}", status=400
            )
        return self.to_account(request, name, "topup" if posted else "topup-again")

    async def refund(self, request: Request) -> Response:
        guarded = await self.guarded_post(request)
        if isinstance(guarded, Response):
            return guarded
        session, fields = guarded
        name, plan_id = fields.get("name", ""), fields.get("plan", "")
        ratings = await self.ctx.ratings()
        try:
            if (await show_plan(ratings, plan_id)).plan.account != name:
                return self.message(request, "No such plan for this account", 404, session)
            await refund(ratings, self.ctx.catalog, plan_id, clock=self.ctx.clock)
        except SettleBusy:
            return self.message(request, "Settlement is running: try again", 409, session)
        except (BalanceError, RatingError) as exc:
            return self.message(request, f"Refund refused: {exc}", 400, session)
        return self.to_account(request, name, "refund")

    async def disable_key(self, request: Request) -> Response:
        guarded = await self.guarded_post(request)
        if isinstance(guarded, Response):
            return guarded
        session, fields = guarded
        name, key = fields.get("name", ""), fields.get("key", "")
        credentials = await self.ctx.credentials()
        owned = {k.access_key_id for k in await credentials.list(name) if k.account == name}
        # ``disable`` also takes an account name: only an AccessKeyId of this account goes in.
        if key not in owned:
            return self.message(request, "No such AccessKey for this account", 404, session)
        await credentials.disable(key)
        return self.to_account(request, name, "disabled")


def create_billing_web(
    ctx: AdminContext, *, session_lifetime: timedelta = DEFAULT_LIFETIME
) -> ASGIApp:
    """The billing web page on ``ctx`` as an ASGI app (``create_admin_app`` mounts it at
    ``/ui``); it guards itself with a session cookie signed in with an admin token."""
    page = _Page(ctx, session_lifetime)
    routes = [
        Route("/", page.home, methods=["GET"]),
        Route("/signin", page.signin_form, methods=["GET"]),
        Route("/signin", page.signin, methods=["POST"]),
        Route("/signout", page.signout, methods=["POST"]),
        Route("/accounts", page.accounts, methods=["GET"]),
        Route("/account", page.account, methods=["GET"]),
        Route("/refund", page.refund_quote, methods=["GET"]),
        Route("/refund", page.refund, methods=["POST"]),
        Route("/topup", page.topup, methods=["POST"]),
        Route("/disable-key", page.disable_key, methods=["POST"]),
    ]
    return SecurityHeaders(Starlette(routes=routes), style_source=style_hash(page.templates.css))
