"""The browser demo in a real browser: headless Chromium loads the page, an image is uploaded, the
regions are ranked, and a screenshot of the result is saved.

    python benchmarks/demo_screenshot.py --out docs/demo.png --min-region-fraction 0.05 --palette  # the README's
    python benchmarks/demo_screenshot.py --url http://127.0.0.1:7860 --out shot.png

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages
separated by NUL bytes on file descriptors 3 and 4), so nothing beyond the standard library and
the `chromium` executable (Debian package `chromium`) is needed. The browser runs with a fresh
profile and no network features (no QUIC, sync, component updates or background networking).
tests/test_demo.py runs `capture` when Chromium is installed.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "images" / "chelsea.jpg"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """A headless Chromium and one page, spoken to over the DevTools pipe."""

    def __init__(self, executable: str, width: int = 1400, height: int = 900):
        self.profile = tempfile.mkdtemp(prefix="dseqjepa-chromium-")
        to_browser_read, to_browser_write = os.pipe()
        from_browser_read, from_browser_write = os.pipe()
        # Above any descriptor the child sets up itself, so that moving them to 3 and 4 clobbers nothing.
        child_in = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
        child_out = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)
        os.close(to_browser_read)
        os.close(from_browser_write)

        def descriptors():  # in the child: the protocol's fixed descriptors
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self.process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=descriptors, pass_fds=(3, 4),
        )
        os.close(child_in)
        os.close(child_out)
        self.write_fd, self.read_fd = to_browser_write, from_browser_read
        self.buffer = b""
        self.next_id = 0
        self.session = None
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer {method} within {timeout} s")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the pipe during {method}")
            self.buffer += chunk

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"Boolean({expression})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout} s for {what or expression}")
            time.sleep(0.2)

    def upload(self, selector: str, path: Path) -> None:
        root = self.send("DOM.getDocument", {"depth": -1, "pierce": True})["root"]["nodeId"]
        node = self.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        if not node:
            raise RuntimeError(f"no element matches {selector!r}")
        self.send("DOM.setFileInputFiles", {"files": [str(path)], "nodeId": node})

    def screenshot(self, path: Path) -> None:
        height = self.evaluate("Math.ceil(document.documentElement.scrollHeight)")
        width = self.evaluate("Math.ceil(document.documentElement.scrollWidth)")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.write_fd)
        os.close(self.read_fd)
        shutil.rmtree(self.profile, ignore_errors=True)


def capture(url: str, out: Path, image: Path = EXAMPLE, chromium: str | None = None, timeout: float = 90,
            min_region_fraction: float | None = None) -> dict:
    """Load the demo at `url`, upload `image` (and type `min_region_fraction` into its box), rank its regions,
    save a screenshot to `out`.

    Returns what the page shows: the region table's text, one cell a line (headers first), the sizes of
    the three result images, and those of them that Gradio's label or buttons (floating over the output) cover.
    """
    executable = chromium or find_chromium()
    if executable is None:
        raise RuntimeError("no Chromium executable found (Debian: apt-get install chromium)")
    browser = Browser(executable)
    try:
        browser.send("Page.navigate", {"url": url})
        browser.wait_for("document.querySelector('#run-button')", timeout, "the demo page to load")
        browser.upload("#input-image input[type=file]", image)
        browser.wait_for("document.querySelector('#input-image img')", timeout, "the uploaded image to show")
        if min_region_fraction is not None:
            browser.evaluate(
                "(() => { const box = document.querySelector('#min-fraction input[type=number]');"
                f" box.value = '{min_region_fraction}';"
                " box.dispatchEvent(new Event('input', {bubbles: true}));"
                " box.dispatchEvent(new Event('change', {bubbles: true})); })()"
            )
            time.sleep(0.3)
        browser.evaluate("document.querySelector('#run-button').click()")
        done = ("['#regions-output', '#saliency-output', '#sequence-output'].every(id => {"
                " const img = document.querySelector(id + ' img'); return img && img.complete && img.naturalWidth > 0; })"
                " && document.querySelector('#region-table').innerText.includes('background')")
        browser.wait_for(done, timeout, "the ranked regions to show")
        time.sleep(0.5)  # let the images settle in the layout
        shown = browser.evaluate(
            "({table: document.querySelector('#region-table').innerText.split('\\n').map(s => s.trim()).filter(s => s),"
            " images: ['#regions-output', '#saliency-output', '#sequence-output'].map("
            "  id => { const img = document.querySelector(id + ' img'); return [img.naturalWidth, img.naturalHeight]; }),"
            " covered: ['#regions-output', '#saliency-output', '#sequence-output'].filter(id => {"
            "  const img = document.querySelector(id + ' img').getBoundingClientRect();"
            "  return [...document.querySelectorAll(id + ' label, ' + id + ' button:not(:has(img))')].some(e => {"
            "   const r = e.getBoundingClientRect();"
            "   return r.width > 0 && r.left < img.right && r.right > img.left && r.top < img.bottom && r.bottom > img.top; });"
            " })})"
        )
        browser.screenshot(out)
        return shown
    finally:
        browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running demo (default: serve one here with the bundled model)")
    parser.add_argument("--out", type=Path, default=Path("demo_screenshot.png"))
    parser.add_argument("--image", type=Path, default=EXAMPLE)
    parser.add_argument("--port", type=int, default=7870)
    parser.add_argument("--min-region-fraction", type=float, default=None, help="typed into the page before ranking")
    parser.add_argument("--palette", action="store_true", help="save with 256 colours (a third of the bytes)")
    args = parser.parse_args(argv)
    demo = None
    url = args.url
    if url is None:
        from dseqjepa_hub.application.demo import build_demo, launch

        demo = build_demo()
        _, url, _ = launch(demo, port=args.port, block=False, quiet=True)
    try:
        started = time.perf_counter()
        shown = capture(url, args.out, args.image, min_region_fraction=args.min_region_fraction)
        if args.palette:
            from PIL import Image

            with Image.open(args.out) as shot:
                shot = shot.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
            shot.save(args.out, optimize=True)
        print(f"screenshot {args.out} in {time.perf_counter() - started:.1f} s; table: {shown['table']}; "
              f"images: {shown['images']}")
    finally:
        if demo is not None:
            demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
