# Runs in MicroPython (unix port) with tests/mpfakes first on the path: exercises the
# real hw/esp32.py and hw/rp2.py against fake hardware and prints one JSON line.
import json

import dht
import hw
import machine
import resetnote

out = {}
b = hw.load("esp32", {"buttons": {"eco": 0, "fan": 2}, "dht_pin": 4})
out["esp32_env"] = b.read_environment()
dht.FAIL.append(1)
out["esp32_env_failed"] = b.read_environment()
machine.FAKE["pins"][2] = 0
out["esp32_press"] = b.poll_inputs()
out["esp32_held"] = b.poll_inputs()  # still held: not a new press
machine.FAKE["pins"][2] = 1
b.poll_inputs()
machine.FAKE["pins"][2] = 0
out["esp32_again"] = b.poll_inputs()
out["esp32_wlan"] = [b.wlan_connect("bad", "x"), b.wlan_connect("good", "x"), b.rssi()]
machine.FAKE["reset_cause"] = machine.DEEPSLEEP_RESET
out["esp32_cause"] = b.reset_cause()
machine.FAKE["reset_cause"] = machine.HARD_RESET  # machine.reset() or a panic
out["esp32_hard"] = b.reset_cause()
b.wdt_start(30000)
b.wdt_feed()
b.deep_sleep(60000)

r = hw.load("rp2", {"humidity_pct": 40.0})
machine.FAKE["adc"][4] = 14000  # about 0.705 V: close to 27 C
out["rp2_env"] = r.read_environment()
out["rp2_no_humidity"] = hw.load("rp2", {}).read_environment()
r.wdt_start(30000)
machine.FAKE["reset_cause"] = machine.WDT_RESET
out["rp2_cause"] = r.reset_cause()
# the firmware's own reset is noted first: the next boot reports the note, once
resetnote.note("software_reset")
out["noted"] = [resetnote.take(r.reset_cause()), resetnote.take(r.reset_cause())]
resetnote.note("exception", "ValueError: bad")
out["noted_exception"] = resetnote.take(r.reset_cause())
out["fake"] = {"wdt": machine.FAKE["wdt"], "slept": machine.FAKE["slept"]}
print(json.dumps(out))
