# Claim provisioning: every board of a batch carries the same image and the same claim
# credential (config.json "claim": {"id", "secret"}). Unprovisioned, a board asks the
# gateway for an account of its own over MQTT, keeps the answer in identity.json and
# from then on connects as that device. Loaded only until then: its heap is given back.
import json
import time

import flash
from mqtt import Client, MQTTError, tls_context

IDENTITY = "identity.json"
WAIT_MS = 20000  # for the provisioning service's answer


def identity():
    ident = flash.read_json(IDENTITY)
    if isinstance(ident, dict) and "device_id" in ident and "password" in ident:
        return ident
    return None


def request(board, cfg):
    """(identity, None), or (None, one line saying why not)."""
    claim = cfg["claim"]
    m = cfg["mqtt"]
    w = cfg.get("wifi", {})
    if not board.wlan_connect(w.get("ssid", ""), w.get("password", "")):
        return None, "WiFi is not connected"
    serial = board.serial()
    cid = "prov-" + serial  # the broker lets this client hear only its own answer
    tls = tls_context(m["ca"]) if m.get("tls") else None
    c = Client(cid, m["host"], m.get("port", 8883 if tls else 1883), "claim-" + claim["id"],
               claim["secret"], tls=tls, ticks=board.ticks_ms)
    got = []
    c.on_message = lambda topic, payload: got.append(payload)
    try:
        c.connect()
        c.subscribe("provision/%s/response" % cid, 1)
        c.publish("provision/%s/request" % cid, json.dumps({
            "claim": claim["id"], "secret": claim["secret"], "serial": serial,
            "hw": cfg.get("hw") or board.hw}).encode(), qos=1)
        start = board.ticks_ms()
        while not got and time.ticks_diff(board.ticks_ms(), start) < WAIT_MS:
            board.wdt_feed()
            c.check()
            board.idle(100, c.poller)
    except (OSError, MQTTError) as e:
        return None, "cannot reach the broker with the claim (%s)" % e
    finally:
        c.close()
    if not got:
        return None, "no answer from the provisioning service (is `fleetpulse gateway provision` running?)"
    try:
        ans = json.loads(got[0])
    except ValueError:
        return None, "the provisioning answer is not JSON"
    if "error" in ans:
        return None, "claim refused: %s" % ans["error"]
    ident = {"device_id": ans["device_id"], "password": ans["password"]}
    flash.write_json(IDENTITY, ident)
    print("fleetpulse: provisioned as %s" % ident["device_id"])
    return ident, None
