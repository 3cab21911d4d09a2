/* The run of well-formed MQTT 5 PUBLISH packets at the start of a buffer, parsed in C:
 * the subscriber's hot path (ingest/mqtt_subscriber.py, parse_packets).
 *
 * Why hand-written: parse_packets in Python cost 1.6 us a PUBLISH, a twentieth of
 * ingest's time at 32 records a message (bench/RESULTS.md), and no library parses MQTT
 * packets out of a buffer without a Python call per packet (paho and aiomqtt deliver one
 * message per callback; see docs/ingest-durability.md).
 *
 * It never raises on what it reads. It takes PUBLISH packets while each one is whole and
 * passes every check parse_packets makes, and stops at the first that is not (another
 * packet type, one cut off by the end of the buffer, one that breaks a rule). The Python
 * loop goes on from there: it handles control packets and raises MalformedPacket with
 * its reason. tests/test_packet_fuzz.py holds the two to the Python parser alone on
 * random packets, cuts and bytes; tests/test_native_sanitized.py runs those under
 * ASan/UBSan.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define PUBLISH 3

static PyTypeObject PublishType;

static PyStructSequence_Field publish_fields[] = {
    {"topic", NULL},
    {"payload", NULL},
    {"packet_id", "0 for QoS 0"},
    {"dup", NULL},
    {"qos", NULL},
    {"retain", NULL},
    {"properties", "the PUBLISH's MQTT 5 properties as sent, undecoded"},
    {NULL, NULL},
};

static PyStructSequence_Desc publish_desc = {
    "fleetpulse.ingest.native_mqtt.Publish",
    "One PUBLISH packet: Publish((topic, payload, packet_id, dup, qos, retain, "
    "properties)).",
    publish_fields,
    7,
};

/* A variable byte integer at b[*pos] before `end`: 1 and its value, or 0 when it is cut
 * off or longer than four bytes (the Python side says which). */
static int varint(const unsigned char *b, Py_ssize_t *pos, Py_ssize_t end, Py_ssize_t *out) {
    Py_ssize_t v = 0, p = *pos;
    for (int shift = 0; shift <= 21; shift += 7) {
        if (p >= end) return 0;
        unsigned char c = b[p++];
        v |= (Py_ssize_t)(c & 0x7F) << shift;
        if (!(c & 0x80)) {
            *pos = p;
            *out = v;
            return 1;
        }
    }
    return 0;
}

/* One whole, valid PUBLISH at b[pos:end] appended to `out`: its end, or -1 to stop
 * there (and -2 with an exception set when memory ran out). */
static Py_ssize_t publish(const unsigned char *b, Py_ssize_t pos, Py_ssize_t end, PyObject *out) {
    unsigned char header = b[pos];
    if (header >> 4 != PUBLISH) return -1;
    int qos = (header >> 1) & 3;
    if (qos == 3) return -1;
    Py_ssize_t p = pos + 1, length;
    if (!varint(b, &p, end, &length) || length > end - p) return -1;
    Py_ssize_t stop = p + length;
    if (p + 2 > stop) return -1;
    Py_ssize_t tlen = (Py_ssize_t)b[p] << 8 | b[p + 1];
    const unsigned char *topic = b + p + 2;
    p += 2 + tlen;
    if (tlen == 0 || p + (qos ? 2 : 0) > stop) return -1;
    long pid = 0;
    if (qos) {
        pid = (long)b[p] << 8 | b[p + 1];
        p += 2;
        if (pid == 0) return -1;
    }
    Py_ssize_t plen;
    if (!varint(b, &p, stop, &plen) || plen > stop - p) return -1;

    PyObject *t = PyUnicode_DecodeUTF8((const char *)topic, tlen, NULL);
    if (t == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) return -2;
        PyErr_Clear();
        return -1;
    }
    PyObject *item = PyStructSequence_New(&PublishType);
    if (item == NULL) {
        Py_DECREF(t);
        return -2;
    }
    PyStructSequence_SetItem(item, 0, t);
    PyObject *fields[6] = {
        PyBytes_FromStringAndSize((const char *)b + p + plen, stop - p - plen),
        PyLong_FromLong(pid),
        PyBool_FromLong(header & 8),
        PyLong_FromLong(qos),
        PyBool_FromLong(header & 1),
        PyBytes_FromStringAndSize((const char *)b + p, plen),
    };
    int failed = 0;
    for (int i = 0; i < 6; i++) {
        if (fields[i] == NULL) failed = 1;
        PyStructSequence_SetItem(item, i + 1, fields[i]); /* NULL is allowed while failing */
    }
    if (failed || PyList_Append(out, item) < 0) {
        Py_DECREF(item);
        return -2;
    }
    Py_DECREF(item);
    return stop;
}

static PyObject *publishes(PyObject *module, PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos, end, limit;
    PyObject *out;
    if (!PyArg_ParseTuple(args, "y*nnnO!", &view, &pos, &end, &limit, &PyList_Type, &out))
        return NULL;
    if (pos < 0 || end > view.len || pos > end) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "positions outside the buffer");
        return NULL;
    }
    if (limit > end) limit = end;
    const unsigned char *b = view.buf;
    while (pos < limit) {
        Py_ssize_t next = publish(b, pos, end, out);
        if (next == -2) {
            PyBuffer_Release(&view);
            return NULL;
        }
        if (next < 0) break;
        pos = next;
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(pos);
}

static PyMethodDef methods[] = {
    {"publishes", publishes, METH_VARARGS,
     "publishes(buf, pos, end, limit, out) -> position: append to `out` the PUBLISH packets "
     "that start at buf[pos:] before `limit`, each whole before `end` and valid; stop at the "
     "first that is not, and return where it starts."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "native_mqtt",
    .m_doc = "MQTT 5 PUBLISH packets parsed in C (ingest's subscriber hot path).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit_native_mqtt(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyStructSequence_InitType2(&PublishType, &publish_desc) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&PublishType);
    if (PyModule_AddObject(m, "Publish", (PyObject *)&PublishType) < 0) {
        Py_DECREF(&PublishType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
