"""Section ``app``: ``streamlit run app.py`` driven by headless Chromium (first plot, cold and
cached; one slider interaction timed from the websocket), or AppTest with ``--quick``;
:func:`app_server` also starts the app for tests/test_browser.py."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .environment import REPO, _load_mnist
from .results import Report, Row, _met, _speedup, fmt
from .timing import Clock, _median


CHROMIUM = "/usr/bin/chromium"


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _app_checkpoint(ctx) -> tuple[Path | None, str]:
    """The shipped checkpoint the app is timed with: MNIST VAE if its data is here, else
    the digits VAE."""
    mnist = REPO / "checkpoints" / "mnist-vae.safetensors"
    if mnist.exists() and not ctx["quick"]:
        try:
            _load_mnist(ctx["data_dir"])
            return mnist, "mnist"
        except Exception:  # noqa: BLE001
            pass
    digits = REPO / "checkpoints" / "digits-vae.safetensors"
    return (digits, "digits") if digits.exists() else (None, "")


@contextlib.contextmanager
def _app_env(ckpt: Path, data_dir):
    """Env for the app: only ``ckpt`` in the shipped folder, an empty runs folder."""
    tmp = Path(tempfile.mkdtemp(prefix="latentviz-bench-app-"))
    (tmp / "shipped").mkdir()
    (tmp / "runs").mkdir()
    shutil.copy2(ckpt, tmp / "shipped" / ckpt.name)
    for m in (ckpt.parent / "maps").glob(f"{ckpt.stem}.*.map"):   # its shipped maps
        (tmp / "shipped" / "maps").mkdir(exist_ok=True)
        shutil.copy2(m, tmp / "shipped" / "maps" / m.name)
    # A fresh machine's user cache: empty, so a map is shipped or computed, never cached.
    env = {"LATENTVIZ_CHECKPOINTS": str(tmp / "shipped"), "LATENTVIZ_RUNS": str(tmp / "runs"),
           "LATENTVIZ_CACHE": str(tmp / "cache")}
    if data_dir:
        env["LATENTVIZ_DATA"] = str(Path(data_dir).expanduser().resolve())
    try:
        yield env, tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Socket:
    """Streamlit's websocket as seen by the browser: when a rerun was asked for (and
    whether of a fragment only) and when the server said the run finished."""

    def __init__(self, page):
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self.BackMsg, self.ForwardMsg = BackMsg, ForwardMsg
        self.reruns: list[tuple[float, bool]] = []   # (time, fragment-only)
        self.finished: list[float] = []
        page.on("websocket", self._attach)

    def _attach(self, ws) -> None:
        ws.on("framesent", lambda p: self._record(p, self.BackMsg, "rerun_script", self.reruns))
        ws.on("framereceived", lambda p: self._record(p, self.ForwardMsg, "script_finished",
                                                      self.finished))

    @staticmethod
    def _record(payload, message, kind: str, times: list) -> None:
        t = time.perf_counter()
        if isinstance(payload, (bytes, bytearray)):
            with contextlib.suppress(Exception):  # not every frame is a message we know
                msg = message.FromString(bytes(payload))
                if msg.WhichOneof("type") == kind:
                    times.append((t, bool(msg.rerun_script.fragment_id)) if kind == "rerun_script"
                                 else t)


def _process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _page_path(script: str) -> str:
    """The URL path app.py gives ``pages/<script>``: its ``url_path`` if set, else the
    file's stem (Streamlit's default)."""
    import re

    text = (REPO / "app.py").read_text()
    m = re.search(r'st\.Page\(\s*["\']pages/' + re.escape(script) + r'["\'][^)]*?url_path\s*=\s*["\']([^"\']+)',
                  text)
    return m.group(1) if m else Path(script).stem


def _wait_plots(page, n: int, timeout_ms: float = 300_000) -> None:
    page.wait_for_function(
        f"() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n}",
        timeout=timeout_ms)


def _idle(page, timeout_ms: float = 300_000) -> None:
    page.wait_for_function(
        "() => { const s = document.querySelector('[data-testid=\"stStatusWidget\"]');"
        " return !s || !s.innerText.includes('Running'); }", timeout=timeout_ms)


@contextlib.contextmanager
def app_server(env_extra: dict, flags: tuple = ()):
    """``streamlit run app.py`` on a free port (its log beside ``$LATENTVIZ_RUNS`` of
    ``env_extra``); yields (process, url, start time, seconds until its health check
    answered). The bench and the browser tests start the app this way."""
    import urllib.request

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(env_extra["LATENTVIZ_RUNS"]).parent / f"streamlit-{port}.log"
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false", *flags],
            cwd=REPO, env={**os.environ, **env_extra}, stdout=out, stderr=subprocess.STDOUT)
    try:
        while True:
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            if server.poll() is not None or time.perf_counter() - t0 > 120:
                raise RuntimeError("streamlit did not start: " + log.read_text()[-500:])
            time.sleep(0.1)
        yield server, url, t0, time.perf_counter() - t0
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()


def _browser_app(rep: Report, ctx: dict, ckpt: Path, env_extra: dict) -> None:
    from playwright.sync_api import sync_playwright

    repeats = 3
    latent = _page_path("Latent_space.py")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            with app_server(env_extra) as (server, url, t0, t_up):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{url}/{latent}")
                _wait_plots(page, 1)
                cold = time.perf_counter() - t0
                page.close()
                cached, server_s = [], []
                for _ in range(repeats):
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    sock = _Socket(page)
                    t1 = time.perf_counter()
                    page.goto(f"{url}/{latent}")
                    _wait_plots(page, 1)
                    cached.append(time.perf_counter() - t1)
                    _idle(page)
                    if sock.reruns and sock.finished:
                        server_s.append(sock.finished[0] - sock.reruns[0][0])
                    page.close()
                rep.row(Row(f"streamlit run -> first latent plot, cold ({ckpt.name})", cold, None,
                            "s", None, "", None, f"server up after {t_up:.1f} s; PCA of 2,000"))
                rep.row(Row("new session -> latent plot, caches warm", _median(cached), None,
                            "s", None, "", None, f"median of {repeats}, browser already open; "
                            f"script run {fmt(_median(server_s), 's')} of it"))
            n_test = 10_000 if ckpt.name.startswith("mnist") else 360   # every test image
            for method in ("tsne", "umap", "pca"):
                _fresh_link(rep, browser, env_extra, ckpt, method, n_test)
            with app_server(env_extra) as (server, url, t0, t_up):
                as_is = _slider(browser, url, server.pid)
                if as_is is None:
                    rep.skip("slider interaction", "the Samples page has no 'Samples per row' slider")
                    return
            # Streamlit runs gc.collect() after every script run, fragments included; with
            # torch, scikit-learn and Plotly loaded that full collection is most of a
            # fragment's server time. The same moves on a second server with the setting
            # flipped show what it costs (or would save, while the app still collects).
            gc_on = _post_script_gc()
            with app_server(env_extra, ("--runner.postScriptGC", str(not gc_on).lower())
                         ) as (server, url, _, _):
                other = _slider(browser, url, server.pid)
            as_is.what = f"Samples slider, app as configured (postScriptGC {str(gc_on).lower()})"
            if other is not None and gc_on:
                rep.row(as_is)
                other.what = "Samples slider, runner.postScriptGC=false (proposal)"
                other.reference, other.ratio = as_is.ours, _speedup(as_is.ours, other.ours)
                rep.row(other)
            elif other is not None:
                as_is.reference, as_is.ratio = other.ours, _speedup(other.ours, as_is.ours)
                as_is.note += " | reference: Streamlit's default, postScriptGC true"
                rep.row(as_is)
            else:
                rep.row(as_is)
        finally:
            browser.close()


def _fresh_link(rep: Report, browser, env_extra: dict, ckpt: Path, method: str, n: int) -> None:
    """A link opened first on a fresh server (empty user cache): the map of every test
    image on screen, server start included (issue target: under 15 s with t-SNE)."""
    link = f"{_page_path('Latent_space.py')}?checkpoint={ckpt.stem}&method={method}&n={n}&seed=0"
    with app_server(env_extra) as (_, url, t0, t_up):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/{link}")
        page.wait_for_function(
            f"() => document.body.innerText.includes('{n} of {n} test images')"
            " && document.querySelector('.js-plotly-plot .main-svg')", timeout=600_000)
        took = time.perf_counter() - t0
        shipped = (Path(env_extra["LATENTVIZ_CHECKPOINTS"]) / "maps"
                   / f"{ckpt.stem}.{method}.map").exists()
        page.close()
    rep.row(Row(f"fresh server, link -> map of all test images ({method})", took, None, "s",
                None, "< 15 s" if method == "tsne" else "", _met(took, 15, lower=True)
                if method == "tsne" else None,
                f"server up after {t_up:.1f} s; map {'shipped' if shipped else 'computed'}"))


def _post_script_gc() -> bool:
    """Whether the app's .streamlit/config.toml leaves Streamlit's gc.collect() after
    every script run on (Streamlit's default)."""
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python < 3.11
        return True
    path = REPO / ".streamlit" / "config.toml"
    try:
        return bool(tomllib.loads(path.read_text()).get("runner", {}).get("postScriptGC", True))
    except (OSError, ValueError):
        return True


def _slider(browser, url: str, server_pid: int, moves: int = 7) -> Row | None:
    """Samples page, "Samples per row" slider (a fragment): rerun sent -> script finished,
    as a Row (None if the page has no such slider)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    sock = _Socket(page)
    page.goto(f"{url}/{_page_path('Samples.py')}")
    page.wait_for_function("() => document.querySelector('[data-lv=grid] img')",
                           timeout=300_000)   # the first image grid (figures.image_grid)
    _idle(page)
    page.wait_for_timeout(500)
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="Samples per row")
    if slider.count() == 0:
        page.close()
        return None
    # The keyboard-focusable part: a range input (react-aria, Streamlit >= 1.5x) or a
    # role="slider" thumb (older releases).
    thumb = slider.first.locator('input[type="range"], [role="slider"]').first
    thumb.focus()
    times, dom, fragment_only = [], [], 0
    cpu0 = _process_cpu(server_pid)
    for i in range(moves):
        before_r, before_f = len(sock.reruns), len(sock.finished)
        t0 = time.perf_counter()
        page.keyboard.press("ArrowRight" if i % 2 == 0 else "ArrowLeft")
        deadline = time.perf_counter() + 60
        while (len(sock.reruns) <= before_r or len(sock.finished) <= before_f) \
                and time.perf_counter() < deadline:
            page.wait_for_timeout(5)
        if len(sock.reruns) > before_r and len(sock.finished) > before_f:
            times.append(sock.finished[-1] - sock.reruns[before_r][0])
            dom.append(sock.finished[-1] - t0)
            fragment_only += sock.reruns[before_r][1]
        _idle(page)
        page.wait_for_timeout(300)
    cpu1 = _process_cpu(server_pid)
    page.close()
    med = _median(times)
    cpu = (cpu1 - cpu0) / moves if cpu0 is not None and cpu1 is not None else None
    return (Row("Samples slider: rerun sent -> script finished", med, None, "s", None,
                "<= 200 ms", _met(med, 0.2, lower=True),
                f"median of {len(times)}, {fragment_only} fragment-only; server cpu "
                f"{fmt(cpu, 's')} per move; keypress -> finished {fmt(_median(dom), 's')}",
                {"seconds": times, "server_cpu_per_move": cpu}))


def _apptest_app(rep: Report, ctx: dict, ckpt: Path, env_extra: dict, why: str) -> None:
    """No browser: Streamlit's AppTest runs the pages in this process (full reruns only:
    AppTest does not run a fragment alone, so the slider time is an upper bound)."""
    from streamlit.testing.v1 import AppTest

    from ..ui import state

    saved = {k: os.environ.get(k) for k in env_extra}
    os.environ.update(env_extra)
    try:
        path = str(Path(env_extra["LATENTVIZ_CHECKPOINTS"]) / ckpt.name)
        runs = []
        for _ in range(3):
            at = AppTest.from_file(str(REPO / "pages" / "Latent_space.py"), default_timeout=600)
            at.session_state[state.CHECKPOINT] = path
            with Clock() as c:
                at.run()
            if at.exception:
                raise RuntimeError(f"Latent space page raised: {at.exception[0].message}"[:300])
            runs.append(c.wall)
        rep.row(Row(f"Latent space page, first run (AppTest; {ckpt.name})", runs[0], None, "s",
                    None, "", None, why))
        rep.row(Row("Latent space page, caches warm (AppTest)", _median(runs[1:]), None, "s",
                    None, "", None, "no browser: server side only"))
        at = AppTest.from_file(str(REPO / "pages" / "Samples.py"), default_timeout=600)
        at.session_state[state.CHECKPOINT] = path
        at.run()
        try:
            slider = at.slider(key="sm.c.n")
        except KeyError:
            rep.skip("slider interaction", "the Samples page has no slider 'sm.c.n'")
            return
        times = []
        for i in range(5):
            slider = at.slider(key="sm.c.n")
            slider.set_value(int(slider.value) + (1 if i % 2 == 0 else -1))
            with Clock() as c:
                at.run()
            times.append(c.wall)
        med = _median(times)
        rep.row(Row("Samples slider, full page rerun (AppTest)", med, None, "s", None,
                    "<= 200 ms", _met(med, 0.2, lower=True),
                    "upper bound: the browser reruns only the fragment"))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def bench_app(rep: Report, ctx: dict) -> None:
    rep.section("app", "the Streamlit app: first latent plot and a slider interaction")
    missing = [p for p in ("app.py", "pages/Latent_space.py", "pages/Samples.py")
               if not (REPO / p).exists()]
    if missing:
        rep.skip("app", f"{', '.join(missing)} not there yet")
        return
    try:
        import streamlit  # noqa: F401
    except ImportError:
        rep.skip("app", "streamlit is not installed")
        return
    ckpt, dataset = _app_checkpoint(ctx)
    if ckpt is None:
        rep.skip("app", "no shipped checkpoint (checkpoints/mnist-vae or digits-vae.safetensors)")
        return
    browser_ok, why = True, ""
    if ctx["quick"]:
        browser_ok, why = False, "--quick: AppTest instead of a browser"
    elif not Path(CHROMIUM).exists():
        browser_ok, why = False, f"{CHROMIUM} missing: AppTest instead of a browser"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            browser_ok, why = False, "playwright missing: AppTest instead of a browser"
    with _app_env(ckpt, ctx["data_dir"]) as (env, _):
        if browser_ok:
            _browser_app(rep, ctx, ckpt, env)
        else:
            rep.note(why)
            _apptest_app(rep, ctx, ckpt, env, why)
