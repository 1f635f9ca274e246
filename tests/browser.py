"""Shared setup of the Playwright browser tests."""

from __future__ import annotations


def offline(page, attempted: list[str], schemes: tuple[str, ...] = ("file:",)) -> None:
    """Let ``page`` load URLs of ``schemes`` only: any other request is recorded in ``attempted`` and aborted,
    so a test can assert the page needed no network."""

    def block(route) -> None:
        if route.request.url.startswith(schemes):
            route.continue_()
        else:
            attempted.append(route.request.url)
            route.abort()

    page.route("**/*", block)
