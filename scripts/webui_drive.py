"""Drive Open WebUI in headless Chromium (Playwright, Debian's ``chromium``) against an ollama-torch server:
the model list shows the server's models, a chat answer streams into the page, and a model is pulled and
deleted from the admin page's "Manage Models" dialog. Run by ``scripts/webui_check.py`` with the Python of
Open WebUI's own venv (where Playwright is installed); it writes ``result.json`` and screenshots to ``--out``.

Each check is confirmed on both sides: what the page shows, and what the server says (``/api/tags``,
``/metrics``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from playwright.async_api import Page, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeout

PROMPT = "Why is the sky blue? Answer in two sentences."


def server_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def server_models(ollama: str) -> list[str]:
    return [m["model"] for m in server_json(ollama + "/api/tags")["models"]]


def requests_answered(ollama: str) -> dict[str, float]:
    """Every request the server answered, as ``METHOD endpoint status`` (what Open WebUI called, and how it went)."""
    with urllib.request.urlopen(ollama + "/metrics", timeout=30) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("ollama_torch_http_requests_total{"):
            sample, _, value = line.rpartition(" ")
            labels = dict(part.split("=", 1) for part in sample[sample.index("{") + 1 : -1].split(","))
            key = " ".join(labels[k].strip('"') for k in ("method", "endpoint", "status"))
            out[key] = float(value)
    return out


def metric(ollama: str, name: str, **labels: str) -> float:
    """One sample of the server's /metrics (0 when absent)."""
    with urllib.request.urlopen(ollama + "/metrics", timeout=30) as response:
        text = response.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == (f"{name}{{{want}}}" if labels else name):
            return float(value)
    return 0.0


async def open_home(page: Page, webui: str) -> None:
    await page.goto(webui + "/", wait_until="load", timeout=180_000)
    await page.locator("#chat-input").wait_for(timeout=120_000)
    await page.wait_for_timeout(2000)
    whats_new = page.get_by_text("Okay, Let's Go!")  # the release notes, shown once per user
    if await whats_new.count():
        await whats_new.click()


async def check_model_list(page: Page, ollama: str, out: Path) -> dict[str, Any]:
    await page.locator("#model-selector-model-button").click()
    await page.wait_for_timeout(1500)
    await page.screenshot(path=str(out / "models.png"))
    listed = await page.get_by_role("button").all_inner_texts()
    await page.keyboard.press("Escape")
    served = server_models(ollama)
    shown = [m for m in served if any(m in text for text in listed)]
    return {"ok": bool(served) and shown == served, "served": served, "shown": shown, "screenshot": str(out / "models.png")}


async def check_streamed_chat(page: Page, ollama: str, model: str, out: Path) -> dict[str, Any]:
    chats = metric(ollama, "ollama_torch_http_requests_total", endpoint="/api/chat", method="POST", status="200")
    steps = metric(ollama, "ollama_torch_inter_token_latency_seconds_count", model=model)
    await page.locator("#chat-input").click()
    await page.keyboard.type(PROMPT)
    await page.keyboard.press("Enter")
    answer = page.locator("#response-content-container")
    finished = page.get_by_role("button", name="Regenerate")  # the answer's actions appear once it is complete
    partials: list[str] = []
    started = time.monotonic()
    while time.monotonic() - started < 300:
        text = (await answer.last.inner_text()).strip() if await answer.count() else ""
        if text and (not partials or partials[-1] != text):
            partials.append(text)
        if await finished.count() and await finished.first.is_visible():
            break
        await page.wait_for_timeout(50)
    complete = await finished.count() > 0
    text = (await answer.last.inner_text()).strip() if await answer.count() else ""
    if text and (not partials or partials[-1] != text):
        partials.append(text)
    await page.screenshot(path=str(out / "chat.png"))
    final = partials[-1] if partials else ""
    served_chats = metric(ollama, "ollama_torch_http_requests_total", endpoint="/api/chat", method="POST", status="200") - chats
    served_steps = metric(ollama, "ollama_torch_inter_token_latency_seconds_count", model=model) - steps
    error = "does not support" in final or "error" in final.lower()[:40]
    return {
        "ok": complete and len(partials) >= 2 and not error and served_chats >= 1 and served_steps >= 1,
        "complete": complete, "answer": final, "partial_texts_seen": len(partials), "first_partial": partials[0] if partials else "",
        "server_chat_requests": served_chats, "server_streamed_steps": served_steps, "screenshot": str(out / "chat.png"),
    }


async def wait_idle(ollama: str, quiet: float = 15, timeout: float = 600) -> None:
    """Until the server has answered nothing but /metrics for ``quiet`` seconds (at most ``timeout``): Open
    WebUI asks the model for a title, tags and follow-up questions after an answer, one after another."""
    deadline, since = time.monotonic() + timeout, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        with urllib.request.urlopen(ollama + "/metrics", timeout=30) as response:
            lines = response.read().decode().splitlines()
        busy = [line for line in lines if line.startswith("ollama_torch_http_requests_in_flight{")
                and 'endpoint="/metrics"' not in line and not line.endswith(" 0.0")]
        if busy:
            since = time.monotonic()
        await asyncio.sleep(0.5)


async def open_manage_models(page: Page, webui: str) -> None:
    await page.goto(webui + "/admin/settings/models", wait_until="load", timeout=180_000)
    await page.get_by_role("button", name="Actions").click(timeout=120_000)
    await page.get_by_text("Manage", exact=True).click()
    await page.get_by_placeholder("Enter model tag (e.g. mistral:7b)").wait_for(timeout=60_000)


async def wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.5)
    return bool(condition())


async def check_pull_and_delete(page: Page, webui: str, ollama: str, name: str, out: Path) -> dict[str, Any]:
    await open_manage_models(page, webui)
    box = page.get_by_placeholder("Enter model tag (e.g. mistral:7b)")
    await box.fill(name)
    await box.locator("xpath=following::button[1]").click()  # "Pull Model"
    pulled = await wait_for(lambda: name in server_models(ollama), 300)
    toast_seen = False
    if pulled:  # the page's own word for it
        try:
            await page.get_by_text(f"Model '{name}' has been successfully downloaded.").wait_for(timeout=15_000)
            toast_seen = True
        except PlaywrightTimeout:
            pass
    await page.screenshot(path=str(out / "pull.png"))

    await open_manage_models(page, webui)  # reopened: its model list now has the pulled model
    delete_select = page.locator("select").filter(has=page.locator(f'option[value="{name}"]'))
    offered = await delete_select.count() == 1
    deleted = False
    if offered:
        await delete_select.select_option(name)
        await page.get_by_role("button", name="Delete Model").click()
        await page.get_by_role("button", name="Confirm").click()
        deleted = await wait_for(lambda: name not in server_models(ollama), 120)
        await page.wait_for_timeout(1000)
    await page.screenshot(path=str(out / "delete.png"))
    return {
        "ok": pulled and toast_seen and offered and deleted, "model": name, "pulled": pulled, "success_toast": toast_seen,
        "offered_for_deletion": offered, "deleted": deleted,
        "screenshots": [str(out / "pull.png"), str(out / "delete.png")],
    }


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"webui": args.webui, "ollama_torch": args.ollama, "checks": {}}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        result["chromium"] = browser.version
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        checks = result["checks"]
        try:
            await open_home(page, args.webui)
            checks["model_list"] = await check_model_list(page, args.ollama, out)
            checks["streamed_chat"] = await check_streamed_chat(page, args.ollama, args.model, out)
            if args.pull:
                checks["pull_and_delete"] = await check_pull_and_delete(page, args.webui, args.ollama, args.pull, out)
        except Exception as exc:  # recorded: the check failed where it stopped
            await page.screenshot(path=str(out / "failure.png"))
            result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            await browser.close()
    await wait_idle(args.ollama)  # Open WebUI's own calls after an answer (a title, tags) finish
    result["requests_answered"] = requests_answered(args.ollama)
    result["ok"] = "error" not in result and all(c["ok"] for c in result["checks"].values())
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--webui", required=True, help="Open WebUI's URL")
    parser.add_argument("--ollama", required=True, help="the ollama-torch server's URL")
    parser.add_argument("--model", required=True, help="the model Open WebUI selects (the only one served)")
    parser.add_argument("--pull", default="", help="a model name to pull and delete from the admin page")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    result = asyncio.run(drive(args))
    Path(args.out, "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
