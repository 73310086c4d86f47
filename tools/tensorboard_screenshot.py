"""Screenshot of a TensorBoard page in headless Chromium: checks the dashboard as a person sees it.

Starts ``tensorboard --logdir LOGDIR`` on 127.0.0.1 at a free port, waits until it serves the
runs, saves a PNG of one page with ``chromium --headless --screenshot`` and stops the server.
Chromium comes from the system (Debian: ``apt-get install chromium``).

Usage:
    python tools/tensorboard_screenshot.py runs/demo/logs --out /tmp/scalars.png
    python tools/tensorboard_screenshot.py runs/demo/logs --page custom_scalars --out /tmp/custom.png

Exit status 2 (no traceback) for a missing log folder or browser, 1 when TensorBoard does not
come up or no PNG is written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
PAGES = ("scalars", "custom_scalars", "timeseries")


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_runs(url: str, server: subprocess.Popen, timeout: float = 60.0) -> list:
    """Poll ``url/data/runs`` until TensorBoard lists at least one run; return the runs.

    Example:
        >>> wait_for_runs("http://127.0.0.1:6006", server)
        ['train', 'validation']
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"tensorboard exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/data/runs", timeout=2) as response:
                runs = json.loads(response.read())
            if runs:
                return runs
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"tensorboard did not list any run at {url} within {timeout:.0f} s")


def screenshot(browser: str, url: str, out: Path, width: int, height: int, settle_ms: int) -> None:
    """Save ``url`` as a PNG with headless Chromium (``settle_ms``: page time before the shot)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--window-size={width},{height}", f"--virtual-time-budget={settle_ms}", f"--screenshot={out}", url]
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir", help="a TensorBoard log folder (a kmtl run's logs/)")
    parser.add_argument("--out", default="tensorboard.png", help="the PNG to write (default: tensorboard.png)")
    parser.add_argument("--page", choices=PAGES, default="scalars", help="the dashboard to show (default: scalars)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1800)
    parser.add_argument("--settle-ms", type=int, default=15000, help="page time before the shot (default: 15000)")
    parser.add_argument("--browser", default=None, help=f"the Chromium binary (default: the first of {', '.join(BROWSERS)})")
    args = parser.parse_args(argv)

    logdir = Path(args.logdir)
    if not logdir.is_dir():
        print(f"tensorboard_screenshot: error: LOGDIR {logdir} is not a folder; pass a run's logs/ folder", file=sys.stderr)
        return 2
    browser = args.browser or next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None or not shutil.which(browser):
        print(f"tensorboard_screenshot: error: no Chromium found ({args.browser or ', '.join(BROWSERS)}); "
              "install it (apt-get install chromium) or pass --browser PATH", file=sys.stderr)
        return 2

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_log = tempfile.TemporaryFile()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
                               "--port", str(port), "--reload_interval", "0"],
                              stdout=server_log, stderr=subprocess.STDOUT)
    try:
        runs = wait_for_runs(url, server)
        out = Path(args.out)
        out.unlink(missing_ok=True)  # never report an old PNG as this one
        screenshot(browser, f"{url}/#{args.page}", out, args.width, args.height, args.settle_ms)
    except (RuntimeError, subprocess.SubprocessError) as error:
        server_log.seek(0)
        print(f"tensorboard_screenshot: error: {error}\n{server_log.read().decode(errors='replace')[-2000:]}", file=sys.stderr)
        return 1
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server_log.close()
    if not out.is_file():
        print(f"tensorboard_screenshot: error: {browser} wrote no {out}", file=sys.stderr)
        return 1
    print(f"{out} ({out.stat().st_size // 1024} KiB): runs {', '.join(runs)} at {url}/#{args.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
