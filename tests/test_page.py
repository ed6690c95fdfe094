"""GET / serves the web chat page: self-contained, so it works offline and under a stage prefix."""

import re


def test_the_page_is_served_as_html(api):
    response = api.http.get("/")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    page = response.body.decode()
    assert page.startswith("<!doctype html>")
    assert '<textarea id="message"' in page and "<script>" in page


def test_the_page_loads_nothing_from_elsewhere(api):
    page = api.http.get("/").body.decode()

    # No absolute or protocol-relative URLs, no external scripts, styles or imports.
    assert not re.search(r"(?:https?:)?//[\w.-]+\.\w", page)
    assert not re.search(r"<(?:script|link|iframe|img)\b[^>]*\b(?:src|href)=", page, re.IGNORECASE)
    assert "@import" not in page and "url(" not in page

