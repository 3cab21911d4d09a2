"""`fleetpulse firmware flash`: one board from whatever it holds to a provisioned device
that has reported. Steps, each safe to run again:

  runtime   write the MicroPython runtime (only with --runtime FILE)
  connect   the raw REPL through mpremote; refuse a runtime the firmware cannot run on
  bundle    the firmware compiled for the board, from the cache when the sources match
  register  reuse the account the board's config.json holds if it still verifies, else
            add the device (or rotate it) in the registry
  copy      only files whose SHA-256 differs, each checked after writing; config.json last
  report    reset, then wait at the broker for `online` and the first envelope

A failure before config.json is on the board puts the registry back as it was, so the
board's old credentials keep working and a re-run starts from the same place.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetpulse.errors import UserError
from fleetpulse.gateway.registry import Registry

from .board_link import BoardLink, ConsoleTail, FlashError, check_runtime
from .bundle import cached_build
from .first_report import ReportWatcher
from .site import CA_ON_BOARD, Site

STEPS = ("runtime", "connect", "bundle", "register", "copy", "report")
CONFIG = "config.json"
OTA_POINTER = "ota.json"  # firmware/otaboot.py


@dataclass
class FlashJob:
    port: str
    device_id: str
    site: Site
    registry: Registry
    broker: tuple[str, int]
    auth: tuple[str | None, str | None]  # the account that watches the device come up
    cache: Path
    board: str | None = None  # None: whatever the board's runtime is for
    runtime: Path | None = None
    timeout: float = 60.0
    rotate: bool = False


@dataclass
class FlashResult:
    port: str
    device_id: str
    ok: bool = False
    verdict: str = ""
    firmware: str | None = None
    copied: list[str] = field(default_factory=list)
    up_to_date: int = 0  # files already on the board as the bundle has them
    credentials: str = ""  # "added", "reused" or "rotated"
    online_s: float | None = None
    telemetry_s: float | None = None
    total_s: float = 0.0
    started_at: float = 0.0  # wall clock (epoch seconds), to show boards overlapping
    ended_at: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds it took
    console: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


Progress = Callable[[str, str, str], None]  # (port, step, what is happening)


def flash_board(job: FlashJob, progress: Progress) -> FlashResult:
    """Run every step for one board; the result says how far it got and why it stopped.
    Never raises for a board's own trouble: with --all, one bad board must not stop the
    others."""
    res = FlashResult(job.port, job.device_id, started_at=time.time())
    t0 = time.monotonic()
    link: BoardLink | None = None
    step = "runtime"
    mark = t0

    def begin(name: str, what: str) -> None:
        nonlocal step, mark
        now = time.monotonic()
        res.steps[step] = round(now - mark, 3)
        step, mark = name, now
        progress(job.port, name, what)

    try:
        if job.runtime is not None:
            from .runtime import write_runtime

            progress(job.port, "runtime", f"writing {job.runtime.name}")
            write_runtime(job.runtime, job.port, job.board)
        begin("connect", "connecting")
        link = BoardLink(job.port)
        info = link.info()
        board = check_runtime(info, job.board)
        begin("bundle", f"MicroPython {info.version_text} ({info.platform})")
        bundle, manifest = cached_build(board, job.cache,
                                        arch=info.arch if board != "sim" else None)
        res.firmware = manifest["firmware_version"]
        begin("register", f"firmware {res.firmware}")
        password, undo = _register(job, link, res)
        begin("copy", f"{res.credentials} credentials")
        try:
            _copy(job, link, bundle, manifest, password, res, progress)
        except BaseException:
            undo()
            raise
        begin("report", f"{len(res.copied)} copied, {res.up_to_date} up to date; resetting")
        watcher = ReportWatcher(job.broker, job.auth, job.device_id).start()
        tail = ConsoleTail(job.port)
        try:
            watcher.start_clock()
            link.reset()
            link = None
            tail.start()
            report = watcher.wait(job.timeout)
        finally:
            watcher.close()
            res.console = tail.stop()
        res.online_s, res.telemetry_s = _round(report.online_s), _round(report.telemetry_s)
        res.ok, res.verdict = _judge(job, res, report.fw)
    except (FlashError, UserError) as e:
        res.ok, res.verdict = False, f"{step}: {e}"
    except Exception as e:  # a bug or an unforeseen board reply: still one line
        res.ok, res.verdict = False, f"{step}: {type(e).__name__}: {e}"
    finally:
        if link is not None:
            link.close()
        res.steps[step] = round(time.monotonic() - mark, 3)
        res.total_s = round(time.monotonic() - t0, 3)
        res.ended_at = time.time()
    return res


def flash_boards(jobs: list[FlashJob], progress: Progress) -> list[FlashResult]:
    """Every board at once: each waits mostly on its own serial line and its own boot."""
    if len(jobs) == 1:
        return [flash_board(jobs[0], progress)]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(lambda j: flash_board(j, progress), jobs))


def _register(job: FlashJob, link: BoardLink, res: FlashResult,
              ) -> tuple[str, Callable[[], None]]:
    """The device's password, and how to undo the registry change if the copy fails."""
    reg = job.registry
    reg.init()
    before = reg.entry(job.device_id)
    on_board = _board_config(link)
    mqtt = on_board.get("mqtt")
    old = mqtt.get("password") if isinstance(mqtt, dict) else None
    if on_board.get("device_id") != job.device_id:
        old = None
    if not job.rotate and isinstance(old, str) and reg.verify(job.device_id, old):
        res.credentials = "reused"
        return old, lambda: None
    active = before is not None and not before.get("revoked_at")
    if active and not job.rotate and on_board.get("device_id") != job.device_id:
        # another board may be this device: new credentials would lock that one out
        named = on_board.get("device_id")
        raise FlashError(f"{job.device_id} is registered and this board is not it (its "
                         f"config.json names {named or 'no device'}): pick another id, or "
                         "pass --rotate to give this board the id and new credentials")
    if active:
        password = reg.rotate(job.device_id).password
        res.credentials = "rotated"
    else:
        password = reg.add(job.device_id, job.site.model, job.site.attributes).password
        res.credentials = "added"
    return password, lambda: reg.put_entry(job.device_id, before)


def _board_config(link: BoardLink) -> dict[str, Any]:
    data = link.read(CONFIG)
    try:
        cfg = json.loads(data) if data else {}
    except ValueError:
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _copy(job: FlashJob, link: BoardLink, bundle: Path, manifest: dict[str, Any],
          password: str, res: FlashResult, progress: Progress) -> None:
    files: list[tuple[str, bytes]] = []
    if job.site.ca is not None:
        files.append((CA_ON_BOARD, job.site.ca.read_bytes()))
    # main.py last of the code: a board cut off midway still boots the old entry point
    for f in sorted(manifest["files"], key=lambda f: f["path"] == "main.py"):
        files.append((f["path"], (bundle / f["path"]).read_bytes()))
    cfg = job.site.device_config(job.device_id, password)
    files.append((CONFIG, (json.dumps(cfg, indent=1) + "\n").encode()))
    # A .py beside the .mpy of the same module wins the import on MicroPython: one left
    # from a development copy would silently run instead of the bundle.
    shadows = [p[:-4] + ".py" for p, _ in files if p.endswith(".mpy")]
    # An over-the-air update's pointer would go on booting its slot instead of what is
    # flashed now (firmware/otaboot.py): the board runs what the cable put on it.
    shadows.append(OTA_POINTER)
    paths = [p for p, _ in files]
    have = link.sha256s(paths + shadows)
    for path, digest in zip(shadows, have[len(paths):], strict=True):
        if digest is not None:
            link.remove(path)
            if path == OTA_POINTER:
                progress(job.port, "copy", "removed the pointer of an earlier update")
    for (path, data), on_board in zip(files, have[:len(paths)], strict=True):
        digest = hashlib.sha256(data).hexdigest()
        if path == CONFIG and on_board is not None:
            # the same settings in another layout need no rewrite
            if _board_config(link) == cfg:
                res.up_to_date += 1
                continue
        elif digest == on_board:
            res.up_to_date += 1
            continue
        progress(job.port, "copy", f"{path} ({len(data):,} bytes)")
        link.put(path, data, digest)
        res.copied.append(path)


def _judge(job: FlashJob, res: FlashResult, fw: str | None) -> tuple[bool, str]:
    dev, limit = job.device_id, job.timeout
    if res.online_s is None:
        return False, (f"report: no `online` from {dev} within {limit:.0f} s: it did not "
                       "reach the broker. Check the site file's WiFi (ssid, password) and "
                       f"broker ({job.site.host}:{job.site.port} as devices see it"
                       f"{', its CA' if job.site.ca else ''}); the board's console is below")
    if res.telemetry_s is None:
        return False, (f"report: {dev} came online after {res.online_s:.1f} s but sent no "
                       f"telemetry within {limit:.0f} s: the firmware is not publishing; "
                       "the board's console is below")
    if fw != res.firmware:
        return False, (f"report: {dev} reports firmware {fw}, not the {res.firmware} just "
                       "copied: a stale module on the board may be imported first")
    copied = (f"{len(res.copied)} files copied" if res.copied
              else "nothing copied (up to date)")
    return True, (f"{dev} online after {res.online_s:.1f} s, first telemetry after "
                  f"{res.telemetry_s:.1f} s, firmware {fw}; {copied}, credentials "
                  f"{res.credentials}")


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)
