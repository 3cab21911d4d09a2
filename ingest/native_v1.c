/* Contract v1 envelopes decoded straight into column buffers: ingest's first path.
 *
 * Why hand-written: at 32 records per message, decoding into Python objects and
 * building Arrow columns from them cost ~0.7 us a record (msgspec typed structs; the
 * Arrow and polars JSON readers were no cheaper and check nothing), most of what one
 * core has for everything (bench/RESULTS.md, issue 17). No library decodes JSON into
 * typed, checked columns without an object per value, so this file does exactly that
 * for the one shape the contract defines, and nothing more.
 *
 * It never refuses anything. It takes a message only when every byte is the plain
 * form of a valid envelope (no escapes, ASCII strings, no unknown key, every check of
 * the contract passed) and declines everything else untouched: then the msgspec path
 * (envelope_decoder.py) and the slow path (contract.py), which names the reason of a
 * refusal, take the message as before. tests/test_envelope_decoder.py holds what this
 * takes to the slow path's rows (every vector, random envelopes, every cut of one,
 * random bytes changed in one, random number spellings, each event kind's required
 * fields); tests/test_native_sanitized.py runs the byte-level ones under ASan/UBSan.
 *
 * Columns: a growable buffer per column (values, a byte per row saying "not null" for
 * nullable ones, and for strings int32 end offsets plus the bytes). A message is parsed
 * straight into them and, when it is declined part-way or the caller finds it a
 * duplicate, the columns are cut back to the rows before it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* mirrors ingest/contract.py (asserted by tests/test_envelope_decoder.py) */
#define MAX_RECORDS 256
#define MIN_TIME_MS 1577836800000LL
#define MAX_CLOCK_AHEAD_MS (24LL * 3600 * 1000)
#define MAX_EXACT_INT 9007199254740992LL /* 2**53: beyond it an integer has no exact double */

/* ---- growable buffers and columns ---- */

typedef struct {
    char *p;
    Py_ssize_t len, cap;
} Buf;

static int buf_grow(Buf *b, Py_ssize_t more) {
    if (b->len + more <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + more) cap *= 2;
    char *p = PyMem_Realloc(b->p, (size_t)cap);
    if (p == NULL) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

enum kind { I64, I32, F64, STR };

typedef struct {
    const char *name;
    enum kind kind;
    int nullable;
} ColSpec;

typedef struct {
    Buf val;  /* values; for STR the end offset of each row (int32), after a leading 0 */
    Buf mask; /* nullable only: 1 = a value, 0 = null */
    Buf data; /* STR only: the bytes */
} Col;

enum { E_DEVICE, E_IID, E_BOOT, E_SEQ, E_FW, E_HW, E_RECEIVED, E_N };
static const ColSpec ENV_COLS[E_N] = {
    {"device_id", STR, 0}, {"iid", STR, 1}, {"boot", I64, 0}, {"seq", I64, 0},
    {"fw", STR, 0}, {"hw", STR, 0}, {"received", I64, 0}};

/* a record's fields, in the order of the keys table below */
enum {
    K_T, K_TYPE,
    K_TEMPERATURE, K_HUMIDITY, K_PRESSURE, K_LIGHT, K_BATTERY, K_RSSI,
    K_EVENT, K_FEATURE, K_NAME, K_VALUE, K_BUTTON, K_CODE,
    K_UPTIME, K_RECONNECTS, K_FREE_MEM, K_DROPPED, K_RESET_CAUSE, K_LAST_ERROR, K_INTERVAL,
    K_N
};
static const char *const KEYS[K_N] = {
    "t", "type",
    "temperature_c", "humidity_pct", "pressure_hpa", "light_lux", "battery_pct", "rssi_dbm",
    "event", "feature", "name", "value", "button", "code",
    "uptime_s", "reconnects", "free_mem", "records_dropped", "reset_cause", "last_error",
    "interval_s"};
#define BIT(k) (1u << (k))
#define READING_KEYS (BIT(K_T) | BIT(K_TYPE) | (((1u << 6) - 1) << K_TEMPERATURE))
#define READING_REQUIRED (BIT(K_T) | BIT(K_TYPE) | BIT(K_TEMPERATURE) | BIT(K_HUMIDITY))
#define EVENT_KEYS (BIT(K_T) | BIT(K_TYPE) | (((1u << 13) - 1) << K_EVENT))
#define EVENT_REQUIRED (BIT(K_T) | BIT(K_TYPE) | BIT(K_EVENT))

/* per table: owner (the envelope's row), idx (place in its records), ts, then fields */
#define R_FIELDS 3
static const ColSpec READING_COLS[R_FIELDS + 6] = {
    {"owner", I64, 0}, {"idx", I32, 0}, {"ts", I64, 0},
    {"temperature_c", F64, 1}, {"humidity_pct", F64, 1}, {"pressure_hpa", F64, 1},
    {"light_lux", F64, 1}, {"battery_pct", F64, 1}, {"rssi_dbm", F64, 1}};
static const ColSpec EVENT_COLS[R_FIELDS + 13] = {
    {"owner", I64, 0}, {"idx", I32, 0}, {"ts", I64, 0},
    {"event", STR, 0}, {"feature", STR, 1}, {"name", STR, 1}, {"value", STR, 1},
    {"button", STR, 1}, {"code", STR, 1}, {"uptime_s", I64, 1}, {"reconnects", I64, 1},
    {"free_mem", I64, 1}, {"records_dropped", I64, 1}, {"reset_cause", STR, 1},
    {"last_error", STR, 1}, {"interval_s", I64, 1}};

typedef struct {
    const ColSpec *spec;
    int ncols;
    Py_ssize_t rows;
    Col cols[16];
} Table;

static int width(enum kind k) { return k == I32 || k == STR ? 4 : 8; }

/* Cut a table back to `rows` rows (also makes an empty table's first string offset). */
static int table_truncate(Table *t, Py_ssize_t rows) {
    for (int i = 0; i < t->ncols; i++) {
        Col *c = &t->cols[i];
        const ColSpec *s = &t->spec[i];
        if (s->kind == STR) {
            if (c->val.cap == 0) {
                if (buf_grow(&c->val, 4) < 0) return -1;
                memset(c->val.p, 0, 4);
            }
            c->val.len = (rows + 1) * 4;
            c->data.len = ((int32_t *)c->val.p)[rows];
        } else {
            c->val.len = rows * width(s->kind);
        }
        c->mask.len = s->nullable ? rows : 0;
    }
    t->rows = rows;
    return 0;
}

static void table_free(Table *t) {
    for (int i = 0; i < t->ncols; i++) {
        PyMem_Free(t->cols[i].val.p);
        PyMem_Free(t->cols[i].mask.p);
        PyMem_Free(t->cols[i].data.p);
        memset(&t->cols[i], 0, sizeof(Col));
    }
}

/* Appenders: each adds one value (or null) to a column of the table's current row. */
static int put_i64(Col *c, int64_t v, int valid, int nullable) {
    if (buf_grow(&c->val, 8) < 0 || (nullable && buf_grow(&c->mask, 1) < 0)) return -1;
    memcpy(c->val.p + c->val.len, &v, 8);
    c->val.len += 8;
    if (nullable) c->mask.p[c->mask.len++] = (char)valid;
    return 0;
}

static int put_i32(Col *c, int32_t v) {
    if (buf_grow(&c->val, 4) < 0) return -1;
    memcpy(c->val.p + c->val.len, &v, 4);
    c->val.len += 4;
    return 0;
}

static int put_f64(Col *c, double v, int valid) {
    if (buf_grow(&c->val, 8) < 0 || buf_grow(&c->mask, 1) < 0) return -1;
    memcpy(c->val.p + c->val.len, &v, 8);
    c->val.len += 8;
    c->mask.p[c->mask.len++] = (char)valid;
    return 0;
}

static int put_str(Col *c, const char *s, Py_ssize_t n, int valid, int nullable) {
    if (c->data.len + n > INT32_MAX) return -1; /* declined: the flush comes first */
    if (buf_grow(&c->val, 4) < 0 || buf_grow(&c->data, n) < 0 ||
        (nullable && buf_grow(&c->mask, 1) < 0))
        return -1;
    if (n) memcpy(c->data.p + c->data.len, s, (size_t)n); /* data.p is NULL until a byte comes */
    c->data.len += n;
    int32_t end = (int32_t)c->data.len;
    memcpy(c->val.p + c->val.len, &end, 4);
    c->val.len += 4;
    if (nullable) c->mask.p[c->mask.len++] = (char)valid;
    return 0;
}

/* ---- the scanner: a strict JSON reader for plain values ---- */

typedef struct {
    const char *p, *end;
} Scan;

static inline void ws(Scan *s) {
    /* the common case first: no whitespace, one compare */
    while (s->p < s->end && (unsigned char)*s->p <= ' ' &&
           (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

static inline int lit(Scan *s, char c) {
    ws(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return 1;
    }
    return 0;
}

static int word(Scan *s, const char *w, size_t n) {
    if ((size_t)(s->end - s->p) >= n && memcmp(s->p, w, n) == 0) {
        s->p += n;
        return 1;
    }
    return 0;
}

/* bytes a plain string holds: printable ASCII but the quote and the backslash */
static unsigned char PLAIN[256];

/* A string of printable ASCII without escapes (anything else is declined, and the
 * other paths decode it); on success *out / *n point into the payload. */
static inline int str(Scan *s, const char **out, Py_ssize_t *n) {
    ws(s);
    if (s->p >= s->end || *s->p != '"') return 0;
    const unsigned char *a = (const unsigned char *)++s->p, *p = a,
                        *e = (const unsigned char *)s->end;
    while (p < e && PLAIN[*p]) p++;
    if (p >= e || *p != '"') return 0;
    *out = (const char *)a;
    *n = p - a;
    s->p = (const char *)p + 1;
    return 1;
}

enum num { NOT_NUM, INT, FLOAT };

static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* A JSON number: INT when written without fraction or exponent and within int64
 * (*i), FLOAT otherwise when finite (*d, correctly rounded as Python's float() does),
 * NOT_NUM for anything else, an integer beyond int64 included. */
static enum num number(Scan *s, int64_t *i, double *d) {
    ws(s);
    const char *a = s->p, *p = s->p, *e = s->end;
    int neg = p < e && *p == '-';
    if (neg) p++;
    if (p >= e || *p < '0' || *p > '9') return NOT_NUM;
    uint64_t m = 0;
    int digits = 0, exp10 = 0, exact = 1;
    if (*p == '0') {
        p++;
    } else {
        for (; p < e && *p >= '0' && *p <= '9'; p++) {
            if (digits < 19) {
                m = m * 10 + (uint64_t)(*p - '0');
                digits++;
            } else {
                exp10++;
                exact = 0;
            }
        }
    }
    int is_int = 1;
    if (p < e && *p == '.') {
        is_int = 0;
        p++;
        if (p >= e || *p < '0' || *p > '9') return NOT_NUM;
        for (; p < e && *p >= '0' && *p <= '9'; p++) {
            if (m == 0 && *p == '0') {
                exp10--;
            } else if (digits < 19) {
                m = m * 10 + (uint64_t)(*p - '0');
                digits++;
                exp10--;
            } else {
                exact = 0;
            }
        }
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        is_int = 0;
        p++;
        int eneg = 0, ev = 0;
        if (p < e && (*p == '+' || *p == '-')) eneg = *p++ == '-';
        if (p >= e || *p < '0' || *p > '9') return NOT_NUM;
        for (; p < e && *p >= '0' && *p <= '9'; p++)
            if (ev < 100000) ev = ev * 10 + (*p - '0');
        exp10 += eneg ? -ev : ev;
    }
    s->p = p;
    if (is_int) {
        if (!exact || m > (uint64_t)INT64_MAX + (uint64_t)neg) return NOT_NUM;
        *i = neg ? (int64_t)(0 - m) : (int64_t)m;
        return INT;
    }
    if (exact && m <= (uint64_t)MAX_EXACT_INT && exp10 >= -22 && exp10 <= 22) {
        /* both operands exact doubles, so one IEEE operation rounds correctly */
        double v = exp10 < 0 ? (double)m / POW10[-exp10] : (double)m * POW10[exp10];
        *d = neg ? -v : v;
        return FLOAT;
    }
    char tmp[64];
    if (p - a >= (Py_ssize_t)sizeof tmp) return NOT_NUM;
    memcpy(tmp, a, (size_t)(p - a));
    tmp[p - a] = 0;
    double v = PyOS_string_to_double(tmp, NULL, NULL);
    if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return NOT_NUM;
    }
    if (!isfinite(v)) return NOT_NUM;
    *d = v;
    return FLOAT;
}

static int is_null(Scan *s) {
    ws(s);
    return word(s, "null", 4);
}

/* ---- one record ---- */

typedef struct {
    const char *p;
    Py_ssize_t n;
    char own[32]; /* a number's JSON spelling, when the value was not a string */
} Text;

typedef struct {
    unsigned seen, given; /* keys present; keys present and not null */
    int64_t t;
    int kind; /* 1 reading, 2 event */
    double num[6];
    Text text[6]; /* event, feature, name, value, button, code */
    int64_t count[5]; /* uptime_s, reconnects, free_mem, records_dropped, interval_s */
    Text cause, error;
} Record;

/* which of `keys` (n of them, lengths in `lens`) k is, or -1; `hint` is tried first
 * (records of one envelope mostly repeat their keys' order) */
static inline int find_key(const char *const *keys, const Py_ssize_t *lens, int n,
                           const char *k, Py_ssize_t kn, int hint) {
    for (int j = 0; j < n; j++) {
        int i = (hint + j) % n;
        if (lens[i] != kn || keys[i][0] != k[0]) continue;
        Py_ssize_t c = 1;
        while (c < kn && keys[i][c] == k[c]) c++;
        if (c == kn) return i;
    }
    return -1;
}
static Py_ssize_t KEY_LEN[K_N];

static int int_text(Text *t, int64_t v) {
    t->n = snprintf(t->own, sizeof t->own, "%lld", (long long)v);
    t->p = t->own;
    return 1;
}

/* a string, or with `ints` an integer spelt as text, or with `any` also a float or a
 * bool spelt as JSON (an event's value) */
static int text_value(Scan *s, Text *t, int ints, int any) {
    ws(s);
    if (s->p < s->end && *s->p == '"') return str(s, &t->p, &t->n);
    if (any && word(s, "true", 4)) {
        t->p = "true";
        t->n = 4;
        return 1;
    }
    if (any && word(s, "false", 5)) {
        t->p = "false";
        t->n = 5;
        return 1;
    }
    if (!ints) return 0;
    int64_t i;
    double d;
    switch (number(s, &i, &d)) {
    case INT: return int_text(t, i);
    case FLOAT: {
        if (!any) return 0;
        char *r = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (r == NULL) {
            PyErr_Clear();
            return 0;
        }
        size_t n = strlen(r);
        if (n < sizeof t->own) memcpy(t->own, r, n);
        PyMem_Free(r);
        if (n >= sizeof t->own) return 0;
        t->p = t->own;
        t->n = (Py_ssize_t)n;
        return 1;
    }
    default: return 0;
    }
}

static int event_name_ok(const Text *t) {
    if (t->n < 1 || t->n > 64 || t->p[0] < 'a' || t->p[0] > 'z') return 0;
    for (Py_ssize_t i = 1; i < t->n; i++) {
        char c = t->p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return 0;
    }
    return 1;
}

static int named(const Text *t, const char *name) {
    return t->n == (Py_ssize_t)strlen(name) && memcmp(t->p, name, (size_t)t->n) == 0;
}

/* the fields an event of this name must have, not null (contract.py _EVENT_REQUIRED) */
static unsigned event_required(const Text *name) {
    if (named(name, "feature_used")) return BIT(K_FEATURE);
    if (named(name, "setting_changed")) return BIT(K_NAME) | BIT(K_VALUE);
    if (named(name, "error")) return BIT(K_CODE);
    if (named(name, "heartbeat")) return BIT(K_UPTIME) | BIT(K_RECONNECTS) | BIT(K_FREE_MEM);
    return 0;
}

/* `order[i]`: the key that followed key i-1 (order[0]: the first key) in the last
 * record read, tried first */
static int record(Scan *s, Record *r, unsigned char order[K_N + 1]) {
    r->seen = r->given = 0;
    r->kind = 0;
    int prev = 0;
    if (!lit(s, '{')) return 0;
    if (lit(s, '}')) return 0;
    do {
        int key = order[prev];
        Py_ssize_t kn = KEY_LEN[key];
        ws(s);
        /* The key the last record had here, quotes included, compared whole: the scan of
         * a key's bytes and the search of the key table were half of this function's
         * time (perf profile in bench/RESULTS.md). */
        if (s->end - s->p >= kn + 2 && s->p[0] == '"' && s->p[kn + 1] == '"' &&
            memcmp(s->p + 1, KEYS[key], (size_t)kn) == 0) {
            s->p += kn + 2;
        } else {
            const char *k;
            if (!str(s, &k, &kn)) return 0;
            key = find_key(KEYS, KEY_LEN, K_N, k, kn, order[prev]);
            if (key < 0) return 0;
            order[prev] = (unsigned char)key;
        }
        if (!lit(s, ':')) return 0;
        prev = key + 1;
        if (r->seen & BIT(key)) return 0; /* repeated: declined (unknown ones above) */
        r->seen |= BIT(key);
        if (key != K_T && key != K_TYPE && key != K_EVENT && is_null(s)) continue;
        r->given |= BIT(key);
        int64_t i;
        double d;
        enum num got;
        switch (key) {
        case K_T:
            if (number(s, &r->t, &d) != INT || r->t < MIN_TIME_MS) return 0;
            break;
        case K_TYPE: {
            ws(s);
            if (word(s, "\"reading\"", 9)) r->kind = 1;
            else if (word(s, "\"event\"", 7)) r->kind = 2;
            else return 0;
            break;
        }
        case K_TEMPERATURE: case K_HUMIDITY: case K_PRESSURE:
        case K_LIGHT: case K_BATTERY: case K_RSSI:
            got = number(s, &i, &d);
            if (got == INT) {
                if (i > MAX_EXACT_INT || i < -MAX_EXACT_INT) return 0;
                d = (double)i;
            } else if (got != FLOAT) {
                return 0;
            }
            r->num[key - K_TEMPERATURE] = d;
            break;
        case K_EVENT:
            if (!str(s, &r->text[0].p, &r->text[0].n) || !event_name_ok(&r->text[0])) return 0;
            break;
        case K_FEATURE: case K_NAME:
            if (!text_value(s, &r->text[key - K_EVENT], 0, 0)) return 0;
            break;
        case K_VALUE:
            if (!text_value(s, &r->text[3], 1, 1)) return 0;
            break;
        case K_BUTTON: case K_CODE:
            if (!text_value(s, &r->text[key - K_EVENT], 1, 0)) return 0;
            break;
        case K_UPTIME: case K_RECONNECTS: case K_FREE_MEM: case K_DROPPED:
            if (number(s, &i, &d) != INT || i < 0) return 0;
            r->count[key - K_UPTIME] = i;
            break;
        case K_INTERVAL:
            if (number(s, &i, &d) != INT) return 0;
            r->count[4] = i;
            break;
        case K_RESET_CAUSE:
            if (!str(s, &r->cause.p, &r->cause.n)) return 0;
            break;
        case K_LAST_ERROR:
            if (!str(s, &r->error.p, &r->error.n)) return 0;
            break;
        }
    } while (lit(s, ','));
    if (!lit(s, '}')) return 0;
    if (r->kind == 1)
        return (r->seen & ~READING_KEYS) == 0 && (r->seen & READING_REQUIRED) == READING_REQUIRED;
    if (r->kind == 2) {
        unsigned need = event_required(&r->text[0]);
        return (r->seen & ~EVENT_KEYS) == 0 && (r->seen & EVENT_REQUIRED) == EVENT_REQUIRED &&
               (r->given & need) == need;
    }
    return 0;
}

/* ---- the Columns type ---- */

typedef struct {
    PyObject_HEAD
    Table env, readings, events;
    Py_ssize_t records;
    unsigned char key_order[K_N + 1]; /* see record() */
    /* the rows before the last message taken, for undo() */
    Py_ssize_t mark_env, mark_readings, mark_events, mark_records;
} Columns;

static int table_init(Table *t, const ColSpec *spec, int ncols) {
    memset(t, 0, sizeof *t);
    t->spec = spec;
    t->ncols = ncols;
    return table_truncate(t, 0);
}

static int put_text(Col *c, const Text *t, int valid) {
    return valid ? put_str(c, t->p, t->n, 1, 1) : put_str(c, "", 0, 0, 1);
}

static int commit(Columns *self, const Record *r, int64_t owner, int32_t idx) {
    Table *t = r->kind == 1 ? &self->readings : &self->events;
    Col *c = t->cols;
    if (put_i64(&c[0], owner, 1, 0) < 0 || put_i32(&c[1], idx) < 0 || put_i64(&c[2], r->t, 1, 0) < 0)
        return -1;
    if (r->kind == 1) {
        for (int k = 0; k < 6; k++)
        {
            int valid = (r->given >> (K_TEMPERATURE + k)) & 1;
            if (put_f64(&c[3 + k], valid ? r->num[k] : 0.0, valid) < 0) return -1;
        }
    } else {
        if (put_str(&c[3], r->text[0].p, r->text[0].n, 1, 0) < 0) return -1;
        for (int k = 1; k < 6; k++)
            if (put_text(&c[3 + k], &r->text[k], (r->given >> (K_EVENT + k)) & 1) < 0) return -1;
        for (int k = 0; k < 4; k++) {
            int valid = (r->given >> (K_UPTIME + k)) & 1;
            if (put_i64(&c[9 + k], valid ? r->count[k] : 0, valid, 1) < 0) return -1;
        }
        if (put_text(&c[13], &r->cause, (r->given >> K_RESET_CAUSE) & 1) < 0 ||
            put_text(&c[14], &r->error, (r->given >> K_LAST_ERROR) & 1) < 0 ||
            put_i64(&c[15], (r->given >> K_INTERVAL) & 1 ? r->count[4] : 0,
                    (r->given >> K_INTERVAL) & 1, 1) < 0)
            return -1;
    }
    t->rows++;
    return 0;
}

enum { V_V, V_DEVICE, V_BOOT, V_SEQ, V_FW, V_HW, V_SENT, V_RECORDS, V_IID, V_N };
static const char *const ENV_KEYS[V_N] = {"v", "device_id", "boot", "seq", "fw", "hw",
                                          "sent_ms", "records", "iid"};
#define ENV_REQUIRED ((1u << V_IID) - 1)
static Py_ssize_t ENV_KEY_LEN[V_N];

static int is_install_id(const char *p, Py_ssize_t n) {
    if (n < 8 || n > 32) return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'z'))) return 0;
    return 1;
}

/* Parse one envelope into the columns; 1 taken, 0 declined (columns untouched by the
 * caller's cut-back), -1 out of memory. */
static int envelope(Columns *self, Scan *s, const char *device, Py_ssize_t device_n,
                    int64_t received_ms, int64_t nums[3], const char **iid, Py_ssize_t *iid_n) {
    unsigned seen = 0;
    const char *fw = NULL, *hw = NULL;
    Py_ssize_t fw_n = 0, hw_n = 0;
    int64_t owner = self->env.rows, t_max = INT64_MIN;
    Py_ssize_t nrec = 0;
    *iid = NULL;
    if (!lit(s, '{')) return 0;
    do {
        const char *k, *v;
        Py_ssize_t kn, vn;
        int64_t i;
        double d;
        if (!str(s, &k, &kn) || !lit(s, ':')) return 0;
        int key = find_key(ENV_KEYS, ENV_KEY_LEN, V_N, k, kn, 0);
        if (key < 0 || (seen & (1u << key))) return 0;
        seen |= 1u << key;
        switch (key) {
        case V_V:
            ws(s);
            if (!word(s, "1", 1) || (s->p < s->end && strchr("0123456789.eE", *s->p))) return 0;
            break;
        case V_DEVICE:
            if (!str(s, &v, &vn) || vn != device_n || memcmp(v, device, (size_t)vn) != 0)
                return 0;
            break;
        case V_BOOT: case V_SEQ: case V_SENT:
            if (number(s, &i, &d) != INT || i < 0) return 0;
            nums[key == V_BOOT ? 0 : key == V_SEQ ? 1 : 2] = i;
            break;
        case V_FW:
            if (!str(s, &fw, &fw_n) || fw_n == 0) return 0;
            break;
        case V_HW:
            if (!str(s, &hw, &hw_n) || hw_n == 0) return 0;
            break;
        case V_IID:
            if (is_null(s)) break;
            if (!str(s, iid, iid_n) || !is_install_id(*iid, *iid_n)) return 0;
            break;
        case V_RECORDS:
            if (!lit(s, '[')) return 0;
            if (lit(s, ']')) break;
            do {
                Record r;
                if (nrec >= MAX_RECORDS || !record(s, &r, self->key_order)) return 0;
                if (r.t > t_max) t_max = r.t;
                if (commit(self, &r, owner, (int32_t)nrec) < 0) return -1;
                nrec++;
            } while (lit(s, ','));
            if (!lit(s, ']')) return 0;
            break;
        }
    } while (lit(s, ','));
    if (!lit(s, '}')) return 0;
    ws(s);
    if (s->p != s->end || (seen & ENV_REQUIRED) != ENV_REQUIRED) return 0;
    if (nrec && t_max > received_ms + MAX_CLOCK_AHEAD_MS) return 0;
    Col *c = self->env.cols;
    if (put_str(&c[E_DEVICE], device, device_n, 1, 0) < 0 ||
        put_str(&c[E_IID], *iid ? *iid : "", *iid ? *iid_n : 0, *iid != NULL, 1) < 0 ||
        put_i64(&c[E_BOOT], nums[0], 1, 0) < 0 || put_i64(&c[E_SEQ], nums[1], 1, 0) < 0 ||
        put_str(&c[E_FW], fw, fw_n, 1, 0) < 0 || put_str(&c[E_HW], hw, hw_n, 1, 0) < 0 ||
        put_i64(&c[E_RECEIVED], received_ms, 1, 0) < 0)
        return -1;
    self->env.rows++;
    self->records += nrec;
    return 1;
}

static int cut_back(Columns *self) {
    self->records = self->mark_records;
    return table_truncate(&self->env, self->mark_env) |
           table_truncate(&self->readings, self->mark_readings) |
           table_truncate(&self->events, self->mark_events);
}

PyDoc_STRVAR(add_doc,
"add(device_id, payload, received_ms) -> (iid, boot, seq, sent_ms) | None\n\n"
"Take one message published on device_id's telemetry topic into the columns and\n"
"return the rest of its identity; None (nothing taken) when it is not the plain\n"
"form of a valid envelope.");

/* Room for one more message in every string column (int32 offsets)? A message adds at
 * most its own length, the topic's device id and a number's spelling per record. */
static int room_for(Columns *self, Py_ssize_t payload_n) {
    Table *tables[3] = {&self->env, &self->readings, &self->events};
    Py_ssize_t most = payload_n + 64 + 32 * (MAX_RECORDS + 1);
    for (int t = 0; t < 3; t++)
        for (int i = 0; i < tables[t]->ncols; i++)
            if (tables[t]->spec[i].kind == STR && tables[t]->cols[i].data.len > INT32_MAX - most)
                return 0;
    return 1;
}

static PyObject *Columns_add(Columns *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "add(device_id: str, payload: bytes, received_ms: int)");
        return NULL;
    }
    Py_ssize_t device_n;
    const char *device = PyUnicode_AsUTF8AndSize(args[0], &device_n);
    int64_t received_ms = PyLong_AsLongLong(args[2]);
    Py_buffer view;
    if (device == NULL || (received_ms == -1 && PyErr_Occurred()) ||
        PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    self->mark_env = self->env.rows;
    self->mark_readings = self->readings.rows;
    self->mark_events = self->events.rows;
    self->mark_records = self->records;
    int64_t nums[3];
    const char *iid = NULL;
    Py_ssize_t iid_n = 0;
    Scan s = {view.buf, (const char *)view.buf + view.len};
    int got = room_for(self, view.len) ? envelope(self, &s, device, device_n, received_ms, nums,
                                                  &iid, &iid_n)
                                       : 0;
    PyObject *iid_obj = NULL;
    if (got == 1)
        iid_obj = iid ? PyUnicode_FromStringAndSize(iid, iid_n) : Py_NewRef(Py_None);
    PyBuffer_Release(&view); /* iid pointed into it: copied above */
    if (got != 1) {
        if (cut_back(self) < 0 || got < 0) return PyErr_NoMemory();
        Py_RETURN_NONE;
    }
    if (iid_obj == NULL) return NULL;
    return Py_BuildValue("(NLLL)", iid_obj, (long long)nums[0], (long long)nums[1],
                         (long long)nums[2]);
}

static PyObject *Columns_undo(Columns *self, PyObject *Py_UNUSED(ignored)) {
    if (cut_back(self) < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *bytes_of(const Buf *b) { return PyBytes_FromStringAndSize(b->p, b->len); }

static PyObject *table_take(Table *t) {
    PyObject *cols = PyDict_New();
    if (cols == NULL) return NULL;
    for (int i = 0; i < t->ncols; i++) {
        const ColSpec *s = &t->spec[i];
        Col *c = &t->cols[i];
        PyObject *v = Py_BuildValue(
            "(sNNN)", s->kind == I64 ? "int64" : s->kind == I32 ? "int32" : s->kind == F64 ? "float64" : "string",
            bytes_of(&c->val), s->nullable ? bytes_of(&c->mask) : Py_NewRef(Py_None),
            s->kind == STR ? bytes_of(&c->data) : Py_NewRef(Py_None));
        if (v == NULL || PyDict_SetItemString(cols, s->name, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(cols);
            return NULL;
        }
        Py_DECREF(v);
    }
    PyObject *out = Py_BuildValue("(nN)", t->rows, cols);
    return out;
}

PyDoc_STRVAR(take_doc,
"take() -> {table: (rows, {column: (type, values, valid, data)})}\n\n"
"Everything taken, as raw column buffers, for the tables envelopes, readings and\n"
"events; the columns start afresh. `valid` has a byte per row (None when the column\n"
"is never null); strings are int32 end offsets after a 0, and `data`.");

static PyObject *Columns_take(Columns *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = Py_BuildValue("{sNsNsN}", "envelopes", table_take(&self->env), "readings",
                                  table_take(&self->readings), "events", table_take(&self->events));
    if (out == NULL) return NULL;
    self->mark_env = self->mark_readings = self->mark_events = self->mark_records = 0;
    if (cut_back(self) < 0) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    return out;
}

static Py_ssize_t Columns_len(Columns *self) { return self->records; }

static PyObject *Columns_rows(Columns *self, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue("{snsn}", "readings", self->readings.rows, "events", self->events.rows);
}

static int Columns_init(Columns *self, PyObject *args, PyObject *kwds) {
    if (PyTuple_GET_SIZE(args) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "Columns() takes no arguments");
        return -1;
    }
    table_free(&self->env);
    table_free(&self->readings);
    table_free(&self->events);
    self->records = 0;
    if (table_init(&self->env, ENV_COLS, E_N) < 0 ||
        table_init(&self->readings, READING_COLS, R_FIELDS + 6) < 0 ||
        table_init(&self->events, EVENT_COLS, R_FIELDS + 13) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void Columns_dealloc(Columns *self) {
    table_free(&self->env);
    table_free(&self->readings);
    table_free(&self->events);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Columns_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Columns_add, METH_FASTCALL, add_doc},
    {"undo", (PyCFunction)Columns_undo, METH_NOARGS,
     "undo()\n\nDrop the message the last add() took (a duplicate, say)."},
    {"take", (PyCFunction)Columns_take, METH_NOARGS, take_doc},
    {"rows", (PyCFunction)Columns_rows, METH_NOARGS,
     "rows() -> {table: rows}\n\nThe rows taken so far into readings and events."},
    {NULL, NULL, 0, NULL}};

static PySequenceMethods Columns_seq = {.sq_length = (lenfunc)Columns_len};

static PyTypeObject ColumnsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "fleetpulse.ingest.native_v1.Columns",
    .tp_basicsize = sizeof(Columns),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, /* native_columns.NativeColumns */
    .tp_doc = "Contract v1 envelopes taken into column buffers (len: records taken).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Columns_init,
    .tp_dealloc = (destructor)Columns_dealloc,
    .tp_methods = Columns_methods,
    .tp_as_sequence = &Columns_seq,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "native_v1",
    .m_doc = "Contract v1 envelopes into column buffers, in C.", .m_size = -1,
    .m_methods = NULL};

PyMODINIT_FUNC PyInit_native_v1(void) {
    for (int i = 0; i < K_N; i++) KEY_LEN[i] = (Py_ssize_t)strlen(KEYS[i]);
    for (int c = 0x20; c < 0x80; c++) PLAIN[c] = c != '"' && c != '\\';
    for (int i = 0; i < V_N; i++) ENV_KEY_LEN[i] = (Py_ssize_t)strlen(ENV_KEYS[i]);
    if (PyType_Ready(&ColumnsType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Columns", (PyObject *)&ColumnsType) < 0 ||
        PyModule_AddIntConstant(m, "MAX_RECORDS", MAX_RECORDS) < 0 ||
        PyModule_AddObject(m, "MIN_TIME_MS", PyLong_FromLongLong(MIN_TIME_MS)) < 0 ||
        PyModule_AddObject(m, "MAX_CLOCK_AHEAD_MS", PyLong_FromLongLong(MAX_CLOCK_AHEAD_MS)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
