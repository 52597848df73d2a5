"""Sign-in with an identity provider in a real browser (Debian's Chromium, driven by Playwright):
the authorization-code flow through a core process and the loopback OpenID provider of
`tests.oidc_provider`, ending with a single-use `login_code`; and the admin login page's
provider button, which lets a linked staff user in and nobody else.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from tests.browser.chromium import CHROMIUM_FLAGS, chromium_or_skip
from tests.oidc_provider import OidcProvider, providers_setting
from tests.servers import core_server, fresh_database, manage, running, server_env

pytestmark = [pytest.mark.e2e, pytest.mark.database_agnostic]

REDEEM = """async (code) => {
  const post = () => fetch('/auth/login-code', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                body: JSON.stringify({login_code: code})});
  const first = await post();
  const body = await first.json();
  const verify = await fetch('/auth/verify', {headers: {Authorization: 'Bearer ' + body.access_token}});
  const replay = await post();
  return {status: first.status, email: body.claims && body.claims.email, verify: verify.status,
          replay: replay.status, replayCode: (await replay.json()).error.code};
}"""

LINK_STAFF = """
from accounts.models import ExternalIdentity, User
staff = User.objects.create_user(email="admin@example.com", name="Admin", is_staff=True, is_superuser=True)
ExternalIdentity.objects.create(user=staff, provider="corp", issuer="{issuer}", subject="admin-sub")
"""


@pytest.fixture(scope="module")
def stack():
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    idp = OidcProvider()
    try:
        with fresh_database() as database:
            env = server_env(**database, OIDC_PROVIDERS=providers_setting(idp))
            manage("shell", "-c", LINK_STAFF.format(issuer=idp.generic), env=env)
            with running(core_server(env=env, server="uvicorn")) as core, sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
                try:
                    yield idp, core, browser
                finally:
                    browser.close()
    finally:
        idp.close()


def test_code_flow_in_a_browser_ends_with_a_single_use_login_code(stack):
    idp, core, browser = stack
    idp.user = {"sub": "browser-sub", "email": "browser@example.com", "email_verified": True, "name": "B"}
    page = browser.new_context().new_page()
    page.goto(f"{core.url}/auth/oidc/corp/login?return_to={quote('/healthz?app=1')}")
    landed = urlsplit(page.url)
    assert (landed.netloc, landed.path) == (urlsplit(core.url).netloc, "/healthz")
    query = parse_qs(landed.query)
    assert query["app"] == ["1"] and len(query["login_code"]) == 1
    assert "access_token" not in page.url and "id_token" not in page.url
    result = page.evaluate(REDEEM, query["login_code"][0])
    assert result == {
        "status": 200,
        "email": "browser@example.com",
        "verify": 200,
        "replay": 401,
        "replayCode": "invalid_token",
    }
    # The provider was asked with PKCE (S256), a state and a nonce.
    token_request = idp.token_requests[-1]
    assert token_request["code_verifier"][0] and token_request["redirect_uri"][0].endswith("/auth/oidc/corp/callback")


def test_a_callback_opened_in_another_browser_is_refused(stack):
    idp, core, browser = stack
    idp.user = {"sub": "other-sub", "email": "other@example.com", "email_verified": True}
    starter = browser.new_context().new_page()
    idp.hold_redirects = True  # the provider shows the way back instead of redirecting at once
    try:
        starter.goto(f"{core.url}/auth/oidc/corp/login?return_to=/healthz")
    finally:
        idp.hold_redirects = False
    callback = idp.held.pop()
    other = browser.new_context().new_page()
    response = other.goto(callback)
    assert response is not None and response.status == 401
    assert json.loads(other.locator("body").inner_text())["error"]["code"] == "invalid_token"
    # The browser that started the flow finishes it with the same URL.
    starter.goto(callback)
    assert "login_code=" in starter.url and urlsplit(starter.url).path == "/healthz"


def test_the_admin_login_page_lets_a_linked_staff_user_in(stack):
    idp, core, browser = stack
    idp.user = {"sub": "admin-sub", "email": "admin@example.com"}
    page = browser.new_context().new_page()
    page.goto(f"{core.url}/admin/login/?next=/admin/")
    page.click("a[data-provider=corp]")
    page.wait_for_url(f"{core.url}/admin/")
    assert "Site administration" in page.content()


def test_the_admin_login_page_refuses_a_user_who_is_not_staff(stack):
    idp, core, browser = stack
    idp.user = {"sub": "plain-sub", "email": "plain@example.com", "email_verified": True}
    page = browser.new_context().new_page()
    page.goto(f"{core.url}/admin/login/?next=/admin/")
    page.click("a[data-provider=corp]")
    page.wait_for_url(f"{core.url}/admin/login/")
    assert "may not use the admin site" in page.content()
    assert page.goto(f"{core.url}/admin/").url.startswith(f"{core.url}/admin/login/")


def test_the_console_signs_in_with_a_provider_button_and_spends_the_login_code(stack):
    idp, core, browser = stack
    idp.user = {"sub": "console-sub", "email": "console@example.com", "email_verified": True, "name": "Con Sole"}
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{core.url}/console/")
    page.get_by_role("link", name="corp").click()
    page.wait_for_selector('#connection[data-state="live"]', timeout=20_000)
    assert urlsplit(page.url).path == "/console/" and "login_code" not in page.url, "the code leaves the address bar"
    assert page.evaluate("window.cortex.user.email") == "console@example.com"
    assert "Con Sole" in page.locator("#account summary").inner_text()
    assert errors == []
    context.close()


def _attackers_login_code(idp: OidcProvider, core, browser) -> str:
    """The attacker signs in with their own account and stops where the code is in the URL."""
    idp.user = {"sub": "attacker-sub", "email": "attacker@example.com", "email_verified": True, "name": "Mallory"}
    attacker = browser.new_context()
    page = attacker.new_page()
    page.goto(f"{core.url}/auth/oidc/corp/login?return_to=/healthz")
    [code] = parse_qs(urlsplit(page.url).query)["login_code"]
    attacker.close()
    return code


def _victim_signed_in(idp: OidcProvider, core, context):
    idp.user = {"sub": "victim-sub", "email": "victim@example.com", "email_verified": True, "name": "Victim"}
    page = context.new_page()
    page.goto(f"{core.url}/console/")
    page.get_by_role("link", name="corp").click()
    page.wait_for_selector('#connection[data-state="live"]', timeout=20_000)
    assert page.evaluate("window.cortex.user.email") == "victim@example.com"
    return page


def test_an_attackers_login_code_opened_by_a_signed_in_victim_asks_first_and_never_signs_them_in(stack):
    """Login CSRF, the console: the victim's open tab keeps the victim's session. The new tab
    asks before it replaces the session; told to go ahead, it still gets nothing: the code
    belongs to the attacker's browser."""
    idp, core, browser = stack
    victim = browser.new_context()
    first = _victim_signed_in(idp, core, victim)
    code = _attackers_login_code(idp, core, browser)
    redeemed: list[int] = []
    second = victim.new_page()
    second.on("response", lambda r: redeemed.append(r.status) if r.url.endswith("/auth/login-code") else None)
    errors: list[str] = []
    second.on("pageerror", lambda error: errors.append(str(error)))
    second.goto(f"{core.url}/console/?login_code={code}")
    dialog = second.locator("#login-code-confirm")
    dialog.wait_for(state="visible", timeout=20_000)
    assert "victim@example.com" in dialog.inner_text() and redeemed == []  # nothing spent before asking
    assert "login_code" not in second.url
    second.locator('#login-code-confirm [data-choice="switch"]').click()  # the worst case: the victim agrees
    second.wait_for_function("document.querySelector('#login-code-confirm') === null")
    second.locator("#toast").wait_for(state="visible", timeout=20_000)  # the refusal is shown
    assert redeemed == [401] and errors == []
    for page in (first, second):
        assert page.evaluate("window.cortex.user && window.cortex.user.email") == "victim@example.com"
    victim.close()


def test_an_attackers_login_code_opened_in_a_fresh_browser_signs_nobody_in(stack):
    idp, core, browser = stack
    code = _attackers_login_code(idp, core, browser)
    victim = browser.new_context()
    page = victim.new_page()
    page.goto(f"{core.url}/console/?login_code={code}")
    page.wait_for_selector("#signin-title", timeout=20_000)
    assert page.evaluate("window.cortex.user") is None and "login_code" not in page.url
    # Staying signed in keeps the session and spends nothing.
    _victim_signed_in(idp, core, victim)
    code = _attackers_login_code(idp, core, browser)
    other = victim.new_page()
    other.goto(f"{core.url}/console/?login_code={code}")
    other.locator('#login-code-confirm [data-choice="stay"]').click(timeout=20_000)
    other.wait_for_selector('#connection[data-state="live"]', timeout=20_000)
    assert other.evaluate("window.cortex.user.email") == "victim@example.com"
    victim.close()
