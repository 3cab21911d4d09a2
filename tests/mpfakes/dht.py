# Fake `dht`: a DHT22 with a fixed reading, or failing reads when told to.
FAIL = []


class DHT22:
    def __init__(self, pin):
        self.pin = pin

    def measure(self):
        if FAIL:
            raise OSError(110)

    def temperature(self):
        return 22.5

    def humidity(self):
        return 41.0
