# A small MQTT 3.1.1 client for the firmware. Written here because umqtt.simple blocks
# in wait_msg, never re-sends unacknowledged QoS 1 messages and sends no keepalive, and
# umqtt.robust only retries by blocking. This one never blocks longer than a socket
# timeout: the application polls it, tracks PUBACKs by packet id, and re-sends what was
# not acknowledged after a reconnect (with DUP set and the same payload).
import select
import socket
import struct
import time

CONNACK_ERRORS = {
    1: "the broker refused the protocol version",
    2: "the broker refused the client id",
    3: "the broker is unavailable",
    4: "bad username or password: check mqtt.username and mqtt.password in config.json",
    5: "not authorised: the device is not registered or was revoked",
}


class MQTTError(Exception):
    pass


def _str(s):
    b = s if isinstance(s, bytes) else s.encode()
    return struct.pack("!H", len(b)) + b


def _varlen(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return out


def tls_context(ca_path):
    """An SSLContext that trusts only the CA in `ca_path` (PEM as openssl writes it, or
    DER). Raises MQTTError with what to fix when the file is not a certificate."""
    import tls
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)  # verifies the broker and its name
    with open(ca_path, "rb") as f:
        data = f.read()
    if data.startswith(b"-----"):
        # MicroPython's mbedTLS binding rejects PEM (mbedTLS wants it NUL-terminated and
        # the binding passes the length without one), so hand it the DER inside.
        import binascii
        data = binascii.a2b_base64(b"".join(
            line.strip() for line in data.split(b"\n") if line.strip()
            and not line.startswith(b"-----")))
    try:
        ctx.load_verify_locations(data)
    except ValueError:
        raise MQTTError("%s is not a CA certificate: copy the broker's ca.crt onto the "
                        "device" % ca_path)
    return ctx


class Client:
    def __init__(self, client_id, host, port=1883, user=None, password=None,
                 keepalive=60, tls=None, ticks=None):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.tls = tls  # an SSLContext, or None for plain TCP
        self._ticks = ticks
        self.sock = None
        self.poller = None
        self._pid = 0
        self._last_tx = 0
        self._last_rx = 0
        self._ping_out = False
        self.on_message = None  # fn(topic: str, payload: bytes)
        self.on_puback = None  # fn(pid: int)

    def _now(self):
        if self._ticks is not None:
            return self._ticks()
        return time.ticks_ms()

    def connect(self, will_topic=None, will_msg=None, timeout_s=10):
        addr = socket.getaddrinfo(self.host, self.port)[0][-1]
        sock = socket.socket()
        sock.settimeout(timeout_s)
        try:
            sock.connect(addr)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        except ValueError as e:  # mbedTLS reports a certificate it does not trust so
            sock.close()
            raise MQTTError("TLS: %s (is mqtt.ca the broker's CA?)" % e)
        except Exception:
            sock.close()
            raise
        self.sock = sock
        flags = 0x02  # clean session: the device re-subscribes and re-sends itself
        payload = _str(self.client_id)
        if will_topic:
            flags |= 0x04 | 0x08 | 0x20  # will, will QoS 1, will retained
            payload += _str(will_topic) + _str(will_msg)
        if self.user is not None:
            flags |= 0x80
            payload += _str(self.user)
            if self.password is not None:
                flags |= 0x40
                payload += _str(self.password)
        head = b"\x00\x04MQTT\x04" + bytes((flags,)) + struct.pack("!H", self.keepalive)
        try:
            self._send(0x10, head + payload)
            kind, body = self._read_packet()
        except Exception:
            self.close()
            raise
        if kind != 0x20 or len(body) != 2:
            self.close()
            raise MQTTError("the broker answered CONNECT with packet type %d" % (kind >> 4))
        if body[1]:
            self.close()
            raise MQTTError(CONNACK_ERRORS.get(body[1], "CONNACK code %d" % body[1]))
        self.poller = select.poll()
        self.poller.register(self.sock, select.POLLIN)
        self._last_rx = self._now()
        self._ping_out = False

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.poller = None

    def disconnect(self):
        try:
            self._send(0xE0, b"")
        except OSError:
            pass
        self.close()

    def _sock(self):
        if self.sock is None:
            raise OSError("not connected")
        return self.sock

    def _send(self, first, body, tail=None):
        n = len(body) + (len(tail) if tail is not None else 0)
        sock = self._sock()
        sock.write(bytes((first,)) + _varlen(n) + body)
        if tail is not None:
            sock.write(tail)
        self._last_tx = self._now()

    def _read(self, n):
        buf = b""
        sock = self._sock()
        while len(buf) < n:
            chunk = sock.read(n - len(buf))
            if not chunk:
                raise OSError("connection closed by the broker")
            buf += chunk
        return buf

    def _read_packet(self):
        first = self._read(1)[0]
        n = 0
        shift = 0
        while True:
            b = self._read(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
        return first, (self._read(n) if n else b"")

    def next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    def publish(self, topic, payload, qos=0, retain=False, pid=0, dup=False):
        """Send a PUBLISH; for QoS 1 return its packet id (PUBACK reports it)."""
        first = 0x30 | (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
        body = _str(topic)
        if qos:
            pid = pid or self.next_pid()
            body += struct.pack("!H", pid)
        self._send(first, body, payload.encode() if isinstance(payload, str) else payload)
        return pid

    def subscribe(self, topic, qos=1):
        pid = self.next_pid()
        self._send(0x82, struct.pack("!H", pid) + _str(topic) + bytes((qos,)))
        return pid

    def check(self):
        """Handle every packet waiting on the socket, and the keepalive; never blocks
        longer than the socket timeout. Raises OSError when the connection is gone."""
        poller = self.poller
        if poller is None:
            raise OSError("not connected")
        while True:
            ev = poller.poll(0)
            if not ev:
                break
            if ev[0][1] & (select.POLLHUP | select.POLLERR):
                raise OSError("connection lost")
            self._handle(*self._read_packet())
        now = self._now()
        ka = self.keepalive * 1000
        # ticks wrap (every 12.4 days on a 32-bit board): only ticks_diff compares them
        if self._ping_out and time.ticks_diff(now, self._last_rx) > ka:
            raise OSError("no answer to PINGREQ within the keepalive")
        if not self._ping_out and time.ticks_diff(now, self._last_tx) >= ka // 2:
            self._send(0xC0, b"")
            self._ping_out = True

    def _handle(self, first, body):
        self._last_rx = self._now()
        kind = first & 0xF0
        if kind == 0x40:  # PUBACK
            if self.on_puback is not None:
                self.on_puback(struct.unpack("!H", body[:2])[0])
        elif kind == 0xD0:  # PINGRESP
            self._ping_out = False
        elif kind == 0x30:  # PUBLISH
            tlen = struct.unpack("!H", body[:2])[0]
            topic = body[2:2 + tlen].decode()
            pos = 2 + tlen
            qos = (first >> 1) & 3
            if qos:
                pid = body[pos:pos + 2]
                pos += 2
                self._send(0x40, pid)
            if self.on_message is not None:
                self.on_message(topic, body[pos:])
        # SUBACK and anything else need no answer
