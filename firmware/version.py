# The firmware version reported in every envelope's "fw" field. `fleetpulse firmware
# build` reads it from here for the bundle manifest.
FW_VERSION = "1.6.0"
