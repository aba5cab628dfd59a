/* The encodings and digests of every audit span that cost the most in Python, each in one native pass:
 *
 * - `canonical_body`: the chain's canonical form (chain/canonical.py), the same bytes as the pure-Python
 *   `canonical._body` for the values it knows: str (not a JSON array in a string), int, float, bool,
 *   None, and lists or tuples of str, of bool, or of numbers. It remembers the sorted order of the last
 *   record's names, which the next record of the same model reuses.
 * - `otlp_attributes`: a span's attributes as repeated OTLP KeyValue fields, the same bytes as
 *   `otlpproto._attributes` for str (valid UTF-8), bool, int64, float, None, and lists or tuples of these.
 * - `compact_json`: a dict of such values as the store's compact JSON (`compact.encoder()`).
 * - `top_entries`: the ``ml.explanation.top`` entries of rows of attributions (`reasons.encode_top`).
 * - `blake2b_rows`, `blake2b_fields`: keyed BLAKE2b digests of many messages in one call, the digests of
 *   input rows (`hashing`) and of decisions' groups (`local_rows`), as hashlib gives them.
 * - `store_rows`, `numbered_rows`: the rows `Store.append` writes of a batch of records (store/store.py),
 *   the same rows as its Python loop builds.
 *
 * For anything else each returns None and the caller takes the Python path, so both paths always agree
 * (and the Python path keeps its errors and warnings); tests/test_native.py compares them on generated
 * values. Imports nothing of otel-rai.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buffer;

/* json.encoder's C string escaper, used for text that is not ASCII (identical output by construction). */
static PyObject *escape_text = NULL;

static int grow(Buffer *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) {
        return 0;
    }
    /* A span's encodings are about a kilobyte: one allocation for most, not ten doublings from empty. */
    Py_ssize_t cap = b->cap ? b->cap * 2 : 2048;
    if (cap < b->len + extra) {
        cap = b->len + extra;
    }
    char *data = PyMem_Realloc(b->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int put(Buffer *b, const char *s, Py_ssize_t n) {
    if (grow(b, n) < 0) {
        return -1;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    return 0;
}

static int put_char(Buffer *b, char c) { return put(b, &c, 1); }

/* A str as it is, in UTF-8. */
static int put_text_raw(Buffer *b, PyObject *text) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    return s == NULL ? -1 : put(b, s, n);
}

/* Whether a byte of ASCII text is written escaped in a JSON string (controls, DEL, the quote and the
 * backslash), by table: one load a byte in the scan every string goes through. Filled at import. */
static unsigned char needs_escape[256];
#define NEEDS_ESCAPE(c) (needs_escape[(unsigned char)(c)])

/* A JSON string as json.encoder.encode_basestring_ascii writes it. */
static int put_text(Buffer *b, PyObject *text) {
    if (!PyUnicode_IS_ASCII(text)) {
        PyObject *escaped = PyObject_CallOneArg(escape_text, text);
        if (escaped == NULL) {
            return -1;
        }
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(escaped, &n);
        int rc = s == NULL ? -1 : put(b, s, n);
        Py_DECREF(escaped);
        return rc;
    }
    const unsigned char *s = PyUnicode_1BYTE_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    Py_ssize_t plain = 0;
    while (plain < n && !NEEDS_ESCAPE(s[plain])) {
        plain++;
    }
    if (plain == n) {  /* the usual text (names, ids, hashes): copied as it is */
        if (grow(b, 2 + n) < 0) {
            return -1;
        }
        char *out = b->data + b->len;
        *out = '"';
        memcpy(out + 1, s, n);
        out[1 + n] = '"';
        b->len += 2 + n;
        return 0;
    }
    if (grow(b, 2 + 6 * n) < 0) {
        return -1;
    }
    char *out = b->data + b->len;
    *out++ = '"';
    memcpy(out, s, plain);
    out += plain;
    for (Py_ssize_t i = plain; i < n; i++) {
        unsigned char c = s[i];
        if (!NEEDS_ESCAPE(c)) {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
        case '\\': *out++ = '\\'; break;
        case '"': *out++ = '"'; break;
        case '\b': *out++ = 'b'; break;
        case '\f': *out++ = 'f'; break;
        case '\n': *out++ = 'n'; break;
        case '\r': *out++ = 'r'; break;
        case '\t': *out++ = 't'; break;
        default:
            *out++ = 'u';
            *out++ = '0';
            *out++ = '0';
            *out++ = "0123456789abcdef"[c >> 4];
            *out++ = "0123456789abcdef"[c & 0xf];
        }
    }
    *out++ = '"';
    b->len = out - b->data;
    return 0;
}

/* An integer's decimal digits, as %lld writes them, without printf's format parsing. */
static int put_long(Buffer *b, long long v) {
    char digits[24];
    char *end = digits + sizeof digits, *p = end;
    unsigned long long n = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    if (v < 0) {
        *--p = '-';
    }
    return put(b, p, end - p);
}

/* The reprs of recent floats, by their bits: a record's scores are written twice (its canonical body, then
 * its store row), and the shortest-repr search is most of the cost of either. Only ever used with the
 * interpreter lock held. A slot with bits 0 is empty: 0.0 never gets here (whole numbers are written above). */
#define REPR_SLOTS 1024
static struct {
    unsigned long long bits;
    char len;
    char text[31];
} repr_cache[REPR_SLOTS];

/* A float as json writes it: its repr, or NaN / Infinity / -Infinity. */
static int put_double(Buffer *b, double d) {
    if (!isfinite(d)) {
        return isnan(d) ? put(b, "NaN", 3) : d > 0 ? put(b, "Infinity", 8) : put(b, "-Infinity", 9);
    }
    /* A whole number below 1e16 (the canonical form's counts, offsets and int labels): its repr is its
       digits and ".0", written here without the general shortest-repr search. -0.0 is left to it. */
    if (d > -1e16 && d < 1e16 && d == (double)(long long)d && (d != 0.0 || !signbit(d))) {
        return put_long(b, (long long)d) < 0 ? -1 : put(b, ".0", 2);
    }
    unsigned long long bits;
    memcpy(&bits, &d, sizeof bits);
    size_t slot = (size_t)((bits * 0x9E3779B97F4A7C15ULL) >> 54) % REPR_SLOTS;
    if (repr_cache[slot].bits == bits) {
        return put(b, repr_cache[slot].text, repr_cache[slot].len);
    }
    char *repr = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (repr == NULL) {
        return -1;
    }
    size_t len = strlen(repr);
    if (len < sizeof repr_cache[slot].text) {
        repr_cache[slot].bits = bits;
        repr_cache[slot].len = (char)len;
        memcpy(repr_cache[slot].text, repr, len);
    }
    int rc = put(b, repr, (Py_ssize_t)len);
    PyMem_Free(repr);
    return rc;
}

/* Results of the value writers: written, failed (an exception is set), or not mine (Python's path). */
enum { DONE = 0, FAILED = -1, DECLINED = 1 };

/* JSON's true or false. */
static int put_bool(Buffer *b, PyObject *v) {
    return (v == Py_True ? put(b, "true", 4) : put(b, "false", 5)) < 0 ? FAILED : DONE;
}

/* A number as the canonical form hashes it: as float64. An int beyond float64 is declined (Python raises). */
static int put_number(Buffer *b, PyObject *v) {
    double d;
    if (PyFloat_CheckExact(v)) {
        d = PyFloat_AS_DOUBLE(v);
    } else {
        d = PyLong_AsDouble(v);
        if (d == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return DECLINED;
        }
    }
    return put_double(b, d) < 0 ? FAILED : DONE;
}

/* An array: homogeneous, so its first entry says what all must be (canonical._array). */
static int put_array(Buffer *b, PyObject *seq) {
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    if (put_char(b, '[') < 0) {
        return FAILED;
    }
    if (n > 0) {
        PyTypeObject *kind = Py_TYPE(items[0]);
        int numbers = kind == &PyLong_Type || kind == &PyFloat_Type;
        if (!numbers && kind != &PyUnicode_Type && kind != &PyBool_Type) {
            return DECLINED;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = items[i];
            PyTypeObject *t = Py_TYPE(v);
            if (i && put_char(b, ',') < 0) {
                return FAILED;
            }
            int rc;
            if (numbers) {
                rc = t == &PyLong_Type || t == &PyFloat_Type ? put_number(b, v) : DECLINED;
            } else if (t != kind) {
                rc = DECLINED;
            } else if (kind == &PyUnicode_Type) {
                rc = put_text(b, v) < 0 ? FAILED : DONE;
            } else {
                rc = put_bool(b, v);
            }
            if (rc != DONE) {
                return rc;
            }
        }
    }
    return put_char(b, ']') < 0 ? FAILED : DONE;
}

static int put_value(Buffer *b, PyObject *v) {
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyUnicode_Type) {
        if (PyUnicode_GET_LENGTH(v) && PyUnicode_READ_CHAR(v, 0) == '[') {
            return DECLINED;  /* maybe an array kept as JSON text: Python parses it */
        }
        return put_text(b, v) < 0 ? FAILED : DONE;
    }
    if (t == &PyLong_Type || t == &PyFloat_Type) {
        return put_number(b, v);
    }
    if (t == &PyBool_Type) {
        return put_bool(b, v);
    }
    if (v == Py_None) {
        return put(b, "null", 4) < 0 ? FAILED : DONE;
    }
    if (t == &PyList_Type || t == &PyTuple_Type) {
        return put_array(b, v);
    }
    return DECLINED;
}

/* Whether attribute `key` is hashed, remembered in `hashed` (canonical._HASHED) as Python decides it;
 * `*asked` is set when Python was asked (its code ran: another thread may have run meanwhile). */
static int is_hashed(PyObject *key, PyObject *hashed, PyObject *classify, Py_ssize_t max_names, int *asked) {
    PyObject *found = PyDict_GetItemWithError(hashed, key);
    if (found == NULL) {
        if (PyErr_Occurred()) {
            return -1;
        }
        *asked = 1;
        if (PyDict_GET_SIZE(hashed) > max_names) {
            PyDict_Clear(hashed);
        }
        found = PyObject_CallOneArg(classify, key);
        if (found == NULL) {
            return -1;
        }
        int rc = PyDict_SetItem(hashed, key, found);
        Py_DECREF(found);
        if (rc < 0) {
            return -1;
        }
    }
    return PyObject_IsTrue(found);
}

/* The record's name, ids and status (code, then message) before its attributes: `texts` holds the name,
 * trace id, span id, parent span id and status message. */
static int put_header(Buffer *b, PyObject *const *texts, long code) {
    if (put_char(b, '[') < 0) {
        return -1;
    }
    for (int i = 0; i < 4; i++) {
        if (put_text(b, texts[i]) < 0 || put_char(b, ',') < 0) {
            return -1;
        }
    }
    if (put_long(b, code) < 0 || put_char(b, ',') < 0 || put_text(b, texts[4]) < 0 || put(b, ",{", 2) < 0) {
        return -1;
    }
    return 0;
}

/* An attribute of a record (a reference to its name and value, and its place in the record's dict) in
 * `canonical_body`'s sort. */
typedef struct {
    PyObject *key;
    PyObject *value;
    Py_ssize_t at;
} Entry;

/* Attributes sorted in C, at most; a record with more is sorted by Python. */
#define SORTED_ENTRIES 64

/* The last record's names in the order of its dict, and which of them are hashed in the order they sort
 * in. The records of one model have the same names in the same order (the same str objects, built once
 * per model or interned): for the next such record, `canonical_body` takes the order from here instead
 * of classifying and sorting its names again. It holds a reference to each name, so that no other
 * name can ever have the address of one of them. */
static struct {
    Py_ssize_t size;  /* names of the record, 0 if none is remembered */
    PyObject *cache, *classify;  /* what classified them (held) */
    PyObject *names[SORTED_ENTRIES];
    Py_ssize_t hashed;  /* of them hashed */
    Py_ssize_t order[SORTED_ENTRIES];  /* the hashed ones' places in `names`, in sorted order */
} last_record;

static void remember_order(PyObject *const *names, Py_ssize_t size, PyObject *hashed, PyObject *classify,
                           const Entry *sorted, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < size; i++) {
        Py_INCREF(names[i]);
    }
    for (Py_ssize_t i = 0; i < last_record.size; i++) {
        Py_DECREF(last_record.names[i]);
    }
    Py_XSETREF(last_record.cache, Py_NewRef(hashed));
    Py_XSETREF(last_record.classify, Py_NewRef(classify));
    memcpy(last_record.names, names, (size_t)size * sizeof(PyObject *));
    for (Py_ssize_t i = 0; i < n; i++) {
        last_record.order[i] = sorted[i].at;
    }
    last_record.size = size;
    last_record.hashed = n;
}

/* The hashed attributes of `attributes` in sorted order as `entries` (new references), if its names are
 * the last record's, in the same order, classified alike: their number, else -1. */
static Py_ssize_t remembered_order(PyObject *attributes, PyObject *hashed, PyObject *classify, Entry *entries) {
    Py_ssize_t size = PyDict_GET_SIZE(attributes);
    if (size == 0 || size != last_record.size || hashed != last_record.cache ||
        classify != last_record.classify) {
        return -1;
    }
    PyObject *values[SORTED_ENTRIES], *key, *value;
    Py_ssize_t pos = 0, i = 0;
    while (PyDict_Next(attributes, &pos, &key, &value)) {
        if (i == size || key != last_record.names[i]) {
            return -1;
        }
        values[i++] = value;
    }
    if (i != size) {
        return -1;
    }
    for (Py_ssize_t j = 0; j < last_record.hashed; j++) {
        Py_ssize_t at = last_record.order[j];
        entries[j].key = Py_NewRef(last_record.names[at]);
        entries[j].value = Py_NewRef(values[at]);
        entries[j].at = at;
    }
    return last_record.hashed;
}

/* Put `key` (ASCII) and its value into `entries[0..n]`, sorted by name, the first `n` being sorted. */
static void insert_sorted(Entry *entries, Py_ssize_t n, PyObject *key, PyObject *value, Py_ssize_t at) {
    const char *k = (const char *)PyUnicode_1BYTE_DATA(key);
    Py_ssize_t klen = PyUnicode_GET_LENGTH(key);
    Py_ssize_t i = n;
    while (i > 0) {
        PyObject *other = entries[i - 1].key;
        Py_ssize_t olen = PyUnicode_GET_LENGTH(other);
        int c = memcmp(PyUnicode_1BYTE_DATA(other), k, olen < klen ? olen : klen);
        if (c < 0 || (c == 0 && olen <= klen)) {
            break;
        }
        entries[i] = entries[i - 1];
        i--;
    }
    entries[i].key = Py_NewRef(key);
    entries[i].value = Py_NewRef(value);
    entries[i].at = at;
}

static PyObject *canonical_body(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *name, *trace_id, *span_id, *parent, *status, *message, *attributes, *hashed, *classify;
    Py_ssize_t max_names;
    if (!PyArg_ParseTuple(args, "OOOOOOO!O!On:canonical_body", &name, &trace_id, &span_id, &parent, &status, &message,
                          &PyDict_Type, &attributes, &PyDict_Type, &hashed, &classify, &max_names)) {
        return NULL;
    }
    PyObject *texts[5] = {name, trace_id, span_id, parent, message};
    for (int i = 0; i < 5; i++) {
        if (!PyUnicode_CheckExact(texts[i])) {
            Py_RETURN_NONE;
        }
    }
    int overflow = 0;
    long code = PyLong_CheckExact(status) ? PyLong_AsLongAndOverflow(status, &overflow) : -1;
    if (!PyLong_CheckExact(status) || overflow || (code == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    /* The hashed attributes, sorted by name as Python sorts str: a C insertion sort of ASCII names (byte
     * order is code point order), with their values, for the usual record; else a list sorted by Python.
     * The entries hold references: the classifier is Python code, and another thread may run meanwhile. */
    Entry local[SORTED_ENTRIES];
    PyObject *names[SORTED_ENTRIES];  /* the record's names in dict order (borrowed), to remember */
    Py_ssize_t sorted = remembered_order(attributes, hashed, classify, local), n = 0, at = 0;
    PyObject *keys = NULL, *result = NULL;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    Buffer b = {NULL, 0, 0};
    int rc = DONE, asked = 0, remembered = sorted >= 0;
    if (!remembered) {
        sorted = 0;
    }
    while (!remembered && rc == DONE && PyDict_Next(attributes, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key)) {
            rc = DECLINED;
            break;
        }
        if (at < SORTED_ENTRIES) {
            names[at] = key;
        }
        at++;
        int h = is_hashed(key, hashed, classify, max_names, &asked);
        if (h <= 0) {
            rc = h < 0 ? FAILED : DONE;
            continue;
        }
        if (keys == NULL && sorted < SORTED_ENTRIES && PyUnicode_IS_ASCII(key)) {
            insert_sorted(local, sorted++, key, value, at - 1);
            continue;
        }
        if (keys == NULL) {  /* too many, or a name that is not ASCII: Python's sort, from here on */
            keys = PyList_New(sorted);
            if (keys == NULL) {
                rc = FAILED;
                break;
            }
            for (Py_ssize_t i = 0; i < sorted; i++) {
                PyList_SET_ITEM(keys, i, Py_NewRef(local[i].key));
            }
        }
        if (PyList_Append(keys, key) < 0) {
            rc = FAILED;
        }
    }
    if (rc == DONE && keys != NULL && PyList_Sort(keys) < 0) {
        rc = FAILED;
    }
    n = keys != NULL ? PyList_GET_SIZE(keys) : sorted;
    if (rc == DONE && put_header(&b, texts, code) < 0) {
        rc = FAILED;
    }
    for (Py_ssize_t i = 0; i < n && rc == DONE; i++) {
        if (keys != NULL) {
            key = PyList_GET_ITEM(keys, i);
            value = PyDict_GetItemWithError(attributes, key);
            if (value == NULL) {  /* the classifier changed the dict: let Python do it */
                rc = PyErr_Occurred() ? FAILED : DECLINED;
                break;
            }
        } else {
            key = local[i].key;
            value = local[i].value;
        }
        if ((i && put_char(&b, ',') < 0) || put_text(&b, key) < 0 || put_char(&b, ':') < 0) {
            rc = FAILED;
            break;
        }
        rc = put_value(&b, value);
    }
    /* Remembered only from a walk of the whole dict in which no Python code ran: the names are then
     * still the dict's, in its order. */
    if (rc == DONE && !remembered && keys == NULL && !asked && at <= SORTED_ENTRIES &&
        at == PyDict_GET_SIZE(attributes)) {
        remember_order(names, at, hashed, classify, local, sorted);
    }
    for (Py_ssize_t i = 0; i < sorted; i++) {
        Py_DECREF(local[i].key);
        Py_DECREF(local[i].value);
    }
    Py_XDECREF(keys);
    if (rc == DONE && put(&b, "}]", 2) == 0) {
        result = PyBytes_FromStringAndSize(b.data, b.len);
    } else if (rc == DECLINED) {
        result = Py_NewRef(Py_None);
    }
    PyMem_Free(b.data);
    return result;
}


/* --- OTLP protobuf ---------------------------------------------------------------------------------- */

/* Nested arrays deeper than this are left to Python. */
#define MAX_DEPTH 16

/* `n` as a protobuf varint into `out` (ten bytes at most, one per 7 bits); returns how many it wrote. */
static int varint_bytes(unsigned long long n, char *out) {
    int k = 0;
    while (n >= 0x80) {
        out[k++] = (char)((n & 0x7f) | 0x80);
        n >>= 7;
    }
    out[k++] = (char)n;
    return k;
}

static int put_varint(Buffer *b, unsigned long long n) {
    char bytes[10];
    return put(b, bytes, varint_bytes(n, bytes));
}

/* A length-delimited field is written as its one-byte tag, then its payload after a gap of the longest
 * length it could need; `close_field` writes the length into the gap and moves the payload up to it. */
#define LENGTH_GAP 5

static Py_ssize_t open_field(Buffer *b, char tag) {
    if (grow(b, 1 + LENGTH_GAP) < 0) {
        return -1;
    }
    b->data[b->len++] = tag;
    b->len += LENGTH_GAP;
    return b->len;
}

static int close_field(Buffer *b, Py_ssize_t start) {
    unsigned long long n = (unsigned long long)(b->len - start);
    if (n >> (7 * LENGTH_GAP)) {  /* 32 GiB: more than the gap holds, and more than any request carries */
        return DECLINED;
    }
    char bytes[LENGTH_GAP];
    int k = varint_bytes(n, bytes);
    char *gap = b->data + start - LENGTH_GAP;
    memcpy(gap, bytes, k);
    memmove(gap + k, b->data + start, b->len - start);
    b->len -= LENGTH_GAP - k;
    return DONE;
}

/* AnyValue: string 1, bool 2, int 3, double 4, array 5 (ArrayValue: values 1). */
static int put_any(Buffer *b, PyObject *v, int depth) {
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyUnicode_Type) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(v, &n);
        if (s == NULL) {  /* a lone surrogate: Python leaves the attribute out, and says so */
            PyErr_Clear();
            return DECLINED;
        }
        return put_char(b, 0x0a) < 0 || put_varint(b, (unsigned long long)n) < 0 || put(b, s, n) < 0 ? FAILED : DONE;
    }
    if (t == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(v);
        char bytes[9] = {0x21};
        memcpy(bytes + 1, &d, 8);
#if PY_BIG_ENDIAN
        for (int i = 1, j = 8; i < j; i++, j--) {  /* protobuf's fixed64 is little-endian */
            char c = bytes[i];
            bytes[i] = bytes[j];
            bytes[j] = c;
        }
#endif
        return put(b, bytes, 9) < 0 ? FAILED : DONE;
    }
    if (t == &PyLong_Type) {
        int overflow = 0;
        long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) {  /* beyond int64: Python leaves it out */
            return DECLINED;
        }
        if (n == -1 && PyErr_Occurred()) {
            return FAILED;
        }
        return put_char(b, 0x18) < 0 || put_varint(b, (unsigned long long)n) < 0 ? FAILED : DONE;
    }
    if (t == &PyBool_Type) {
        return put(b, v == Py_True ? "\x10\x01" : "\x10\x00", 2) < 0 ? FAILED : DONE;
    }
    if (v == Py_None) {
        return DONE;
    }
    if ((t == &PyList_Type || t == &PyTuple_Type) && depth < MAX_DEPTH) {
        Py_ssize_t array = open_field(b, 0x2a);
        if (array < 0) {
            return FAILED;
        }
        Py_ssize_t n = PySequence_Fast_GET_SIZE(v);
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_ssize_t element = open_field(b, 0x0a);
            if (element < 0) {
                return FAILED;
            }
            int rc = put_any(b, PySequence_Fast_GET_ITEM(v, i), depth + 1);
            if (rc == DONE) {
                rc = close_field(b, element);
            }
            if (rc != DONE) {
                return rc;
            }
        }
        return close_field(b, array);
    }
    return DECLINED;
}

static PyObject *otlp_attributes(PyObject *Py_UNUSED(module), PyObject *args) {
    int tag;
    PyObject *attributes;
    if (!PyArg_ParseTuple(args, "iO!:otlp_attributes", &tag, &PyDict_Type, &attributes)) {
        return NULL;
    }
    if (tag <= 0 || tag >= 0x80) {
        Py_RETURN_NONE;
    }
    Buffer b = {NULL, 0, 0};
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    int rc = DONE;
    while (rc == DONE && PyDict_Next(attributes, &pos, &key, &value)) {
        Py_ssize_t n;
        const char *k = PyUnicode_CheckExact(key) ? PyUnicode_AsUTF8AndSize(key, &n) : NULL;
        if (k == NULL) {
            PyErr_Clear();
            rc = DECLINED;
            break;
        }
        /* KeyValue: key 1 (left out when empty, as the SDK's encoder does), value 2 */
        Py_ssize_t key_value = open_field(&b, (char)tag);
        if (key_value < 0) {
            rc = FAILED;
            break;
        }
        if (n && (put_char(&b, 0x0a) < 0 || put_varint(&b, (unsigned long long)n) < 0 || put(&b, k, n) < 0)) {
            rc = FAILED;
            break;
        }
        Py_ssize_t any = open_field(&b, 0x12);
        if (any < 0) {
            rc = FAILED;
            break;
        }
        rc = put_any(&b, value, 0);
        if (rc == DONE) {
            rc = close_field(&b, any);
        }
        if (rc == DONE) {
            rc = close_field(&b, key_value);
        }
    }
    PyObject *result = NULL;
    if (rc == DONE) {
        result = PyBytes_FromStringAndSize(b.data ? b.data : "", b.len);
    } else if (rc == DECLINED) {
        result = Py_NewRef(Py_None);
    }
    PyMem_Free(b.data);
    return result;
}

/* --- compact JSON ----------------------------------------------------------------------------------- */

/* A value as json.dumps(ensure_ascii=True, separators=(",", ":")) writes it: text, numbers as Python
 * writes them (ints exactly, floats as their repr), true/false/null, and arrays of these. */
static int put_json(Buffer *b, PyObject *v, int depth) {
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyUnicode_Type) {
        return put_text(b, v) < 0 ? FAILED : DONE;
    }
    if (t == &PyFloat_Type) {
        return put_double(b, PyFloat_AS_DOUBLE(v)) < 0 ? FAILED : DONE;
    }
    if (t == &PyLong_Type) {
        int overflow = 0;
        long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) {
            return DECLINED;
        }
        if (n == -1 && PyErr_Occurred()) {
            return FAILED;
        }
        return put_long(b, n) < 0 ? FAILED : DONE;
    }
    if (t == &PyBool_Type) {
        return put_bool(b, v);
    }
    if (v == Py_None) {
        return put(b, "null", 4) < 0 ? FAILED : DONE;
    }
    if ((t == &PyList_Type || t == &PyTuple_Type) && depth < MAX_DEPTH) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(v);
        if (put_char(b, '[') < 0) {
            return FAILED;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            if (i && put_char(b, ',') < 0) {
                return FAILED;
            }
            int rc = put_json(b, PySequence_Fast_GET_ITEM(v, i), depth + 1);
            if (rc != DONE) {
                return rc;
            }
        }
        return put_char(b, ']') < 0 ? FAILED : DONE;
    }
    return DECLINED;
}

static PyObject *compact_json(PyObject *Py_UNUSED(module), PyObject *value) {
    if (!PyDict_CheckExact(value)) {
        Py_RETURN_NONE;
    }
    Buffer b = {NULL, 0, 0};
    PyObject *key, *item;
    Py_ssize_t pos = 0, written = 0;
    int rc = put_char(&b, '{') < 0 ? FAILED : DONE;
    while (rc == DONE && PyDict_Next(value, &pos, &key, &item)) {
        if (!PyUnicode_CheckExact(key)) {  /* json writes other keys as text: Python does that */
            rc = DECLINED;
            break;
        }
        if ((written++ && put_char(&b, ',') < 0) || put_text(&b, key) < 0 || put_char(&b, ':') < 0) {
            rc = FAILED;
            break;
        }
        rc = put_json(&b, item, 0);
    }
    PyObject *result = NULL;
    if (rc == DONE && put_char(&b, '}') == 0) {
        result = PyUnicode_DecodeASCII(b.data, b.len, NULL);
    } else if (rc == DECLINED) {
        result = Py_NewRef(Py_None);
    }
    PyMem_Free(b.data);
    return result;
}

/* --- ml.explanation.top ---------------------------------------------------------------------------- */

typedef struct {
    double magnitude;
    Py_ssize_t index;
} Ranked;

/* Larger magnitude first; of equal ones, the earlier feature (Python's stable sort, reversed). */
static int by_magnitude(const void *a, const void *b) {
    const Ranked *x = a, *y = b;
    if (x->magnitude != y->magnitude) {
        return x->magnitude < y->magnitude ? 1 : -1;
    }
    return x->index < y->index ? -1 : x->index > y->index;
}

/* One row's entry as codec.reasons.encode_top writes it; DECLINED for a NaN or a rounding Python refuses. */
static int put_entry(Buffer *b, PyObject *names, PyObject *row, Py_ssize_t k, int by_sign, double step, Ranked *ranked) {
    Py_ssize_t n = PyList_GET_SIZE(row);
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *item = PyList_GET_ITEM(row, j);
        if (!PyFloat_CheckExact(item)) {
            return DECLINED;
        }
        double v = PyFloat_AS_DOUBLE(item);
        if (isnan(v)) {  /* NaN has no place in a ranking: Python's sort decides */
            return DECLINED;
        }
        ranked[j].magnitude = fabs(v);
        ranked[j].index = j;
    }
    qsort(ranked, (size_t)n, sizeof *ranked, by_magnitude);
    int first = 1;
    for (Py_ssize_t r = 0; r < n && r < k; r++) {
        Py_ssize_t j = ranked[r].index;
        double v = PyFloat_AS_DOUBLE(PyList_GET_ITEM(row, j));
        if (v == 0.0) {  /* not a reason */
            continue;
        }
        if ((!first && put_char(b, ',') < 0) || put_text_raw(b, PyList_GET_ITEM(names, j)) < 0 || put_char(b, '=') < 0) {
            return FAILED;
        }
        first = 0;
        if (by_sign) {
            if (put_char(b, v > 0 ? '+' : '-') < 0) {
                return FAILED;
            }
            continue;
        }
        if (step > 0 && isfinite(v)) {
            double steps = ceil(fabs(v) / step);
            if (!isfinite(steps)) {  /* math.ceil raises: Python's path says so */
                return DECLINED;
            }
            v = copysign(steps * step, v);
        }
        char *text = PyOS_double_to_string(v, 'g', 6, Py_DTSF_SIGN, NULL);
        if (text == NULL) {
            return FAILED;
        }
        int rc = put(b, text, (Py_ssize_t)strlen(text));
        PyMem_Free(text);
        if (rc < 0) {
            return FAILED;
        }
    }
    return DONE;
}

static PyObject *top_entries(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *names, *rows, *resolution;
    Py_ssize_t k;
    if (!PyArg_ParseTuple(args, "O!O!nO:top_entries", &PyList_Type, &names, &PyList_Type, &rows, &k, &resolution)) {
        return NULL;
    }
    if (k < 0) {  /* a slice from the end: Python's */
        Py_RETURN_NONE;
    }
    int by_sign = resolution == Py_None;
    double step = 0.0;
    if (!by_sign) {
        if (!PyFloat_CheckExact(resolution) || !isfinite(PyFloat_AS_DOUBLE(resolution))) {
            Py_RETURN_NONE;
        }
        step = PyFloat_AS_DOUBLE(resolution);
    }
    Py_ssize_t width = PyList_GET_SIZE(names), count = PyList_GET_SIZE(rows);
    for (Py_ssize_t j = 0; j < width; j++) {
        if (!PyUnicode_CheckExact(PyList_GET_ITEM(names, j))) {
            Py_RETURN_NONE;
        }
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyList_CheckExact(row) || PyList_GET_SIZE(row) > width) {
            Py_RETURN_NONE;
        }
    }
    PyObject *entries = PyList_New(count);
    Ranked *ranked = PyMem_Malloc(sizeof(Ranked) * (size_t)(width ? width : 1));
    Buffer b = {NULL, 0, 0};
    int rc = entries == NULL || ranked == NULL ? FAILED : DONE;
    for (Py_ssize_t i = 0; i < count && rc == DONE; i++) {
        b.len = 0;
        rc = put_entry(&b, names, PyList_GET_ITEM(rows, i), k, by_sign, step, ranked);
        if (rc == DONE) {
            PyObject *entry = PyUnicode_DecodeUTF8(b.data ? b.data : "", b.len, NULL);
            if (entry == NULL) {
                rc = FAILED;
            } else {
                PyList_SET_ITEM(entries, i, entry);
            }
        }
    }
    PyMem_Free(b.data);
    PyMem_Free(ranked);
    if (rc == DONE) {
        return entries;
    }
    Py_XDECREF(entries);
    if (rc == DECLINED) {
        Py_RETURN_NONE;
    }
    if (!PyErr_Occurred()) {
        PyErr_NoMemory();
    }
    return NULL;
}

/* --- keyed BLAKE2b digests (RFC 7693), many messages at once -------------------------------------------
 *
 * The keyed digests of input rows (audit/hashing.py) and of decisions' groups (audit/local_rows.py), the
 * same hex digests as hashlib.blake2b(key=, person=, digest_size=) gives each message. The keyed state is
 * set up once; each message starts from a copy of it, as the Python code copies its hashlib state. */

#include <stdint.h>

static const uint64_t B2_IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static const uint8_t B2_SIGMA[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
};

#define B2_BLOCK 128
#define B2_MAX_KEY 64
#define B2_MAX_OUT 64

typedef struct {
    uint64_t h[8];
    uint64_t t[2];
    uint8_t buf[B2_BLOCK];
    size_t buflen;
    size_t outlen;
} Blake2b;

static uint64_t load64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static uint64_t rotr64(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

#define B2_G(a, b, c, d, x, y)                  \
    do {                                        \
        v[a] = v[a] + v[b] + (x);               \
        v[d] = rotr64(v[d] ^ v[a], 32);         \
        v[c] = v[c] + v[d];                     \
        v[b] = rotr64(v[b] ^ v[c], 24);         \
        v[a] = v[a] + v[b] + (y);               \
        v[d] = rotr64(v[d] ^ v[a], 16);         \
        v[c] = v[c] + v[d];                     \
        v[b] = rotr64(v[b] ^ v[c], 63);         \
    } while (0)

static void b2_compress(Blake2b *S, const uint8_t *block, int last) {
    uint64_t v[16], m[16];
    for (int i = 0; i < 16; i++) {
        m[i] = load64(block + 8 * i);
    }
    for (int i = 0; i < 8; i++) {
        v[i] = S->h[i];
        v[i + 8] = B2_IV[i];
    }
    v[12] ^= S->t[0];
    v[13] ^= S->t[1];
    if (last) {
        v[14] = ~v[14];
    }
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = B2_SIGMA[r % 10];
        B2_G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        B2_G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        B2_G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        B2_G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        B2_G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        B2_G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        B2_G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        B2_G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++) {
        S->h[i] ^= v[i] ^ v[i + 8];
    }
}

static void b2_add_count(Blake2b *S, uint64_t n) {
    S->t[0] += n;
    if (S->t[0] < n) {
        S->t[1]++;
    }
}

/* A full buffer is compressed only once more input comes: the last block must get the final flag. */
static void b2_update(Blake2b *S, const uint8_t *in, size_t inlen) {
    while (inlen > 0) {
        if (S->buflen == B2_BLOCK) {
            b2_add_count(S, B2_BLOCK);
            b2_compress(S, S->buf, 0);
            S->buflen = 0;
        }
        size_t take = B2_BLOCK - S->buflen < inlen ? B2_BLOCK - S->buflen : inlen;
        memcpy(S->buf + S->buflen, in, take);
        S->buflen += take;
        in += take;
        inlen -= take;
    }
}

/* The state after the key block (padded to a whole block, absorbed like message bytes). */
static void b2_init(Blake2b *S, const uint8_t *key, size_t keylen, const uint8_t *person, size_t personlen,
                    size_t outlen) {
    uint8_t padded[16] = {0};
    memcpy(padded, person, personlen);
    memcpy(S->h, B2_IV, sizeof(B2_IV));
    S->h[0] ^= 0x01010000ULL ^ ((uint64_t)keylen << 8) ^ (uint64_t)outlen;
    S->h[6] ^= load64(padded);
    S->h[7] ^= load64(padded + 8);
    S->t[0] = S->t[1] = 0;
    S->buflen = 0;
    S->outlen = outlen;
    if (keylen > 0) {
        uint8_t block[B2_BLOCK] = {0};
        memcpy(block, key, keylen);
        b2_update(S, block, B2_BLOCK);
    }
}

static void b2_final_hex(Blake2b *S, Py_UCS1 *hex) {
    static const char digits[] = "0123456789abcdef";
    b2_add_count(S, S->buflen);
    memset(S->buf + S->buflen, 0, B2_BLOCK - S->buflen);
    b2_compress(S, S->buf, 1);
    for (size_t i = 0; i < S->outlen; i++) {
        uint8_t byte = (uint8_t)(S->h[i / 8] >> (8 * (i % 8)));
        hex[2 * i] = digits[byte >> 4];
        hex[2 * i + 1] = digits[byte & 15];
    }
}

/* The keyed state of (key, person, digest_size) from the arguments; -1 (an exception set) if invalid. */
static int b2_keyed(Blake2b *S, Py_buffer *key, Py_buffer *person, Py_ssize_t outlen) {
    if (key->len > B2_MAX_KEY || person->len > 16 || outlen < 1 || outlen > B2_MAX_OUT) {
        PyErr_SetString(PyExc_ValueError, "blake2b: key up to 64 bytes, person up to 16, digest 1 to 64");
        return -1;
    }
    b2_init(S, key->buf, (size_t)key->len, person->buf, (size_t)person->len, (size_t)outlen);
    return 0;
}

/* A list of `n` hex digests of `outlen` bytes, filled from `hex` (2 * outlen characters each). */
static PyObject *hex_list(const Py_UCS1 *hex, Py_ssize_t n, size_t outlen) {
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *text = PyUnicode_New((Py_ssize_t)(2 * outlen), 127);
        if (text == NULL) {
            Py_CLEAR(out);
            break;
        }
        memcpy(PyUnicode_1BYTE_DATA(text), hex + 2 * outlen * (size_t)i, 2 * outlen);
        PyList_SET_ITEM(out, i, text);
    }
    return out;
}

static PyObject *blake2b_rows(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer key, person, data;
    Py_ssize_t outlen, n, width;
    if (!PyArg_ParseTuple(args, "y*y*ny*nn", &key, &person, &outlen, &data, &n, &width)) {
        return NULL;
    }
    PyObject *result = NULL;
    Blake2b base;
    Py_UCS1 *hex = NULL;
    if (n < 0 || width < 0 || (width > 0 && n > data.len / width) || (width == 0 && data.len != 0)) {
        PyErr_SetString(PyExc_ValueError, "blake2b_rows: the data is not n rows of width bytes");
    } else if (b2_keyed(&base, &key, &person, outlen) == 0) {
        hex = PyMem_RawMalloc((size_t)n * 2 * (size_t)outlen + 1);
        if (hex == NULL) {
            PyErr_NoMemory();
        } else {
            const uint8_t *rows = data.buf;
            Py_BEGIN_ALLOW_THREADS  /* a large call's rows hash while the caller's thread runs */
            for (Py_ssize_t i = 0; i < n; i++) {
                Blake2b S = base;
                b2_update(&S, rows + (size_t)i * (size_t)width, (size_t)width);
                b2_final_hex(&S, hex + (size_t)i * 2 * (size_t)outlen);
            }
            Py_END_ALLOW_THREADS
            result = hex_list(hex, n, (size_t)outlen);
        }
    }
    PyMem_RawFree(hex);
    PyBuffer_Release(&key);
    PyBuffer_Release(&person);
    PyBuffer_Release(&data);
    return result;
}

static PyObject *blake2b_fields(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer key, person;
    Py_ssize_t outlen;
    PyObject *texts, *tails;
    if (!PyArg_ParseTuple(args, "y*y*nO!O!", &key, &person, &outlen, &PyList_Type, &texts, &PyList_Type, &tails)) {
        return NULL;
    }
    PyObject *result = NULL;
    Blake2b base;
    Py_ssize_t n = PyList_GET_SIZE(tails);
    if (PyList_GET_SIZE(texts) != n) {
        PyErr_SetString(PyExc_ValueError, "blake2b_fields: as many texts as tails");
    } else if (b2_keyed(&base, &key, &person, outlen) == 0) {
        Py_UCS1 *hex = PyMem_Malloc((size_t)n * 2 * (size_t)outlen + 1);
        int declined = 0;
        if (hex == NULL) {
            PyErr_NoMemory();
        }
        for (Py_ssize_t i = 0; hex != NULL && i < n; i++) {
            PyObject *text = PyList_GET_ITEM(texts, i), *tail = PyList_GET_ITEM(tails, i);
            if (!PyUnicode_CheckExact(text) || !PyUnicode_IS_ASCII(text) || !PyBytes_CheckExact(tail)) {
                declined = 1;  /* text that is not ASCII is encoded by Python (surrogates and all) */
                break;
            }
            uint8_t length[8];
            uint64_t len = (uint64_t)PyUnicode_GET_LENGTH(text);
            for (int j = 0; j < 8; j++) {
                length[j] = (uint8_t)(len >> (8 * j));
            }
            Blake2b S = base;
            b2_update(&S, length, 8);
            b2_update(&S, PyUnicode_1BYTE_DATA(text), (size_t)len);
            b2_update(&S, (const uint8_t *)PyBytes_AS_STRING(tail), (size_t)PyBytes_GET_SIZE(tail));
            b2_final_hex(&S, hex + (size_t)i * 2 * (size_t)outlen);
        }
        if (hex != NULL) {
            result = declined ? Py_NewRef(Py_None) : hex_list(hex, n, (size_t)outlen);
        }
        PyMem_Free(hex);
    }
    PyBuffer_Release(&key);
    PyBuffer_Release(&person);
    return result;
}

/* --- the store's rows ----------------------------------------------------------------------------------- */

/* Interned attribute names of a SpanRecord, filled at import. */
static const char *const RECORD_FIELD_NAMES[] = {"trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns",
                                                 "end_ns", "status_code", "status_message"};
#define RECORD_FIELDS 9
static PyObject *record_fields[RECORD_FIELDS];
static const char *const EXTRA_FIELD_NAMES[] = {"parent_is_remote", "trace_state", "events", "links"};
static PyObject *extra_fields[4];
static const char *const ORIGIN_FIELD_NAMES[] = {"resource", "resource_schema_url", "scope_name", "scope_version"};
static PyObject *origin_fields[4];
static PyObject *attributes_name;

/* The one entry of a per-row array of one row (`store._per_row(values, 1)[0]`) as a new reference: None
 * unless `values` is a list or tuple of one; NULL with no error set for a subclass, which Python decides. */
static PyObject *only_entry(PyObject *values) {
    if (values == NULL || values == Py_None) {
        return Py_NewRef(Py_None);
    }
    if (PyList_CheckExact(values)) {
        return Py_NewRef(PyList_GET_SIZE(values) == 1 ? PyList_GET_ITEM(values, 0) : Py_None);
    }
    if (PyTuple_CheckExact(values)) {
        return Py_NewRef(PyTuple_GET_SIZE(values) == 1 ? PyTuple_GET_ITEM(values, 0) : Py_None);
    }
    return PyList_Check(values) || PyTuple_Check(values) ? NULL : Py_NewRef(Py_None);
}

static int hex_digit(Py_UCS1 c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* `store.input_key` of a hash: its first 16 characters as a hex number less 2**63, when they are ASCII hex
 * digits; anything else (None aside) goes to `python_key`, which Python's int() decides. */
static PyObject *input_key(PyObject *hash, PyObject *python_key) {
    if (hash == Py_None) {
        return Py_NewRef(Py_None);
    }
    if (PyUnicode_CheckExact(hash) && PyUnicode_IS_ASCII(hash) && PyUnicode_GET_LENGTH(hash) > 0) {
        const Py_UCS1 *s = PyUnicode_1BYTE_DATA(hash);
        Py_ssize_t n = PyUnicode_GET_LENGTH(hash) < 16 ? PyUnicode_GET_LENGTH(hash) : 16;
        unsigned long long v = 0;
        Py_ssize_t i = 0;
        for (; i < n; i++) {
            int d = hex_digit(s[i]);
            if (d < 0) {
                break;
            }
            v = v << 4 | (unsigned long long)d;
        }
        if (i == n) {  /* v - 2**63 in two's complement: the top bit flipped */
            return PyLong_FromLongLong((long long)(v ^ 0x8000000000000000ULL));
        }
    }
    return PyObject_CallOneArg(python_key, hash);
}

/* The parts of one record's ``spans`` row after its seq and origin, as `Store.append` builds them. */
static PyObject *span_columns(PyObject *r, PyObject *a, PyObject *const *names, Py_ssize_t n, PyObject *json_text,
                              PyObject *extra) {
    PyObject *row = PyTuple_New(RECORD_FIELDS + 7);
    if (row == NULL) {
        return NULL;
    }
    for (int f = 0; f < RECORD_FIELDS; f++) {
        PyObject *v = PyObject_GetAttr(r, record_fields[f]);
        if (v == NULL) {
            Py_DECREF(row);
            return NULL;
        }
        PyTuple_SET_ITEM(row, f, v);
    }
    for (int k = 0; k < 4; k++) {  /* model name, version, fingerprint, operation */
        PyObject *v = PyDict_GetItemWithError(a, names[k]);
        if (v == NULL && PyErr_Occurred()) {
            Py_DECREF(row);
            return NULL;
        }
        PyTuple_SET_ITEM(row, RECORD_FIELDS + k, Py_NewRef(v != NULL ? v : Py_None));
    }
    PyObject *count = PyLong_FromSsize_t(n);
    PyObject *text = count == NULL ? NULL : compact_json(NULL, a);
    if (text == Py_None) {
        Py_SETREF(text, PyObject_CallOneArg(json_text, a));
    }
    int usual = text == NULL ? -1 : 1;  /* no extra parts: an audit span's usual case */
    for (int f = 0; f < 4 && usual == 1; f++) {
        PyObject *v = PyObject_GetAttr(r, extra_fields[f]);
        int set = v == NULL ? -1 : PyObject_IsTrue(v);
        Py_XDECREF(v);
        usual = set < 0 ? -1 : !set;
    }
    PyObject *rare = usual == 0 ? PyObject_CallOneArg(extra, r) : usual == 1 ? Py_NewRef(Py_None) : NULL;
    if (rare == NULL) {
        Py_XDECREF(count);
        Py_XDECREF(text);
        Py_DECREF(row);
        return NULL;
    }
    PyTuple_SET_ITEM(row, RECORD_FIELDS + 4, count);
    PyTuple_SET_ITEM(row, RECORD_FIELDS + 5, text);
    PyTuple_SET_ITEM(row, RECORD_FIELDS + 6, rare);
    return row;
}

/* The `decisions` columns of a record of one decision: (index, decision id, input hash, output, input key). */
static PyObject *single_columns(Py_ssize_t i, PyObject *a, PyObject *const *names, PyObject *id, PyObject *python_key,
                                int *declined) {
    PyObject *hashes = PyDict_GetItemWithError(a, names[5]);
    PyObject *outputs = hashes == NULL && PyErr_Occurred() ? NULL : PyDict_GetItemWithError(a, names[6]);
    if (outputs == NULL && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *hash = only_entry(hashes), *output = only_entry(outputs);
    if (hash == NULL || output == NULL) {  /* an array of a subclass: Python reads it */
        Py_XDECREF(hash);
        Py_XDECREF(output);
        *declined = 1;
        return NULL;
    }
    PyObject *key = input_key(hash, python_key);
    PyObject *columns = key == NULL ? NULL : Py_BuildValue("(nOOOO)", i, id, hash, output, key);
    Py_DECREF(hash);
    Py_DECREF(output);
    Py_XDECREF(key);
    return columns;
}

static PyObject *store_rows(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *records, *names, *json_text, *extra, *python_key;
    if (!PyArg_ParseTuple(args, "O!O!OOO:store_rows", &PyList_Type, &records, &PyTuple_Type, &names, &json_text,
                          &extra, &python_key)) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(names) != 7) {
        PyErr_SetString(PyExc_ValueError, "store_rows: seven attribute names");
        return NULL;
    }
    PyObject *const *name = &PyTuple_GET_ITEM(names, 0);
    PyObject *spans = PyList_New(0), *single = PyList_New(0), *multi = PyList_New(0);
    int declined = 0, failed = spans == NULL || single == NULL || multi == NULL;
    for (Py_ssize_t i = 0; !failed && !declined && i < PyList_GET_SIZE(records); i++) {
        PyObject *r = PyList_GET_ITEM(records, i);
        PyObject *a = PyObject_GetAttr(r, attributes_name);
        if (a == NULL) {
            failed = 1;
            break;
        }
        PyObject *ids = PyDict_CheckExact(a) ? PyDict_GetItemWithError(a, name[4]) : NULL;
        Py_ssize_t n = 0;
        if (!PyDict_CheckExact(a) || (ids == NULL && PyErr_Occurred())) {
            failed = PyErr_Occurred() != NULL;
            declined = !failed;  /* attributes that are not a dict: Python reads them */
        } else if (ids != NULL && ids != Py_None) {
            if (PyList_CheckExact(ids) || PyTuple_CheckExact(ids)) {
                n = Py_SIZE(ids);
            } else {
                declined = 1;  /* ids of another type: Python takes their length as it does */
            }
        }
        PyObject *row = failed || declined ? NULL : span_columns(r, a, name, n, json_text, extra);
        if (row == NULL) {
            failed = !declined;
        } else {
            failed = PyList_Append(spans, row) < 0;
            Py_DECREF(row);
        }
        if (!failed && !declined && n == 1) {
            PyObject *id = PyList_CheckExact(ids) ? PyList_GET_ITEM(ids, 0) : PyTuple_GET_ITEM(ids, 0);
            PyObject *columns = single_columns(i, a, name, id, python_key, &declined);
            if (columns == NULL) {
                failed = !declined;
            } else {
                failed = PyList_Append(single, columns) < 0;
                Py_DECREF(columns);
            }
        } else if (!failed && !declined && n > 1) {
            PyObject *index = PyLong_FromSsize_t(i);
            failed = index == NULL || PyList_Append(multi, index) < 0;
            Py_XDECREF(index);
        }
        Py_DECREF(a);
    }
    PyObject *result = failed ? NULL : declined ? Py_NewRef(Py_None) : PyTuple_Pack(3, spans, single, multi);
    Py_XDECREF(spans);
    Py_XDECREF(single);
    Py_XDECREF(multi);
    return result;
}

/* The ``spans`` rows of `records` numbered from `first`, each with its origin id (`origin_of(record)`, asked
 * again only where a record's resource or scope is not the very objects of the record before), and the
 * ``decisions`` rows of the single-decision `single` columns. */
static PyObject *numbered_rows(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *records, *spans, *single, *origin_of;
    long long first;
    if (!PyArg_ParseTuple(args, "O!O!O!LO:numbered_rows", &PyList_Type, &records, &PyList_Type, &spans,
                          &PyList_Type, &single, &first, &origin_of)) {
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(records);
    if (PyList_GET_SIZE(spans) != n) {
        PyErr_SetString(PyExc_ValueError, "numbered_rows: a row for every record");
        return NULL;
    }
    PyObject *rows = PyList_New(n), *decisions = PyList_New(PyList_GET_SIZE(single));
    PyObject *previous[4] = {NULL, NULL, NULL, NULL}, *origin = NULL;
    int failed = rows == NULL || decisions == NULL;
    for (Py_ssize_t i = 0; !failed && i < n; i++) {
        PyObject *r = PyList_GET_ITEM(records, i), *columns = PyList_GET_ITEM(spans, i);
        PyObject *current[4];
        int same = origin != NULL;
        for (int f = 0; f < 4; f++) {
            current[f] = PyObject_GetAttr(r, origin_fields[f]);
            failed |= current[f] == NULL;
            same &= current[f] == previous[f];
        }
        if (!failed && !same) {
            Py_XSETREF(origin, PyObject_CallOneArg(origin_of, r));
            failed = origin == NULL;
        }
        for (int f = 0; f < 4; f++) {  /* held: identity is compared with objects still alive */
            Py_XSETREF(previous[f], current[f]);
        }
        if (failed || !PyTuple_CheckExact(columns)) {
            if (!failed) {
                PyErr_SetString(PyExc_TypeError, "numbered_rows: rows are tuples");
            }
            failed = 1;
            break;
        }
        Py_ssize_t width = PyTuple_GET_SIZE(columns);
        PyObject *row = PyTuple_New(width + 2), *seq = PyLong_FromLongLong(first + i);
        if (row == NULL || seq == NULL) {
            Py_XDECREF(row);
            Py_XDECREF(seq);
            failed = 1;
            break;
        }
        PyTuple_SET_ITEM(row, 0, seq);
        PyTuple_SET_ITEM(row, 1, Py_NewRef(origin));
        for (Py_ssize_t k = 0; k < width; k++) {
            PyTuple_SET_ITEM(row, k + 2, Py_NewRef(PyTuple_GET_ITEM(columns, k)));
        }
        PyList_SET_ITEM(rows, i, row);
    }
    for (Py_ssize_t j = 0; !failed && j < PyList_GET_SIZE(single); j++) {
        PyObject *c = PyList_GET_ITEM(single, j);
        long long i = PyTuple_CheckExact(c) && PyTuple_GET_SIZE(c) == 5 ? PyLong_AsLongLong(PyTuple_GET_ITEM(c, 0)) : -1;
        if (i < 0 || i >= n) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "numbered_rows: single columns of a record");
            }
            failed = 1;
            break;
        }
        PyObject *row = Py_BuildValue("(LiOOOO)", first + i, 0, PyTuple_GET_ITEM(c, 1), PyTuple_GET_ITEM(c, 2),
                                      PyTuple_GET_ITEM(c, 3), PyTuple_GET_ITEM(c, 4));
        if (row == NULL) {
            failed = 1;
            break;
        }
        PyList_SET_ITEM(decisions, j, row);
    }
    for (int f = 0; f < 4; f++) {
        Py_XDECREF(previous[f]);
    }
    Py_XDECREF(origin);
    PyObject *result = failed ? NULL : PyTuple_Pack(2, rows, decisions);
    Py_XDECREF(rows);
    Py_XDECREF(decisions);
    return result;
}

static PyMethodDef methods[] = {
    {"canonical_body", canonical_body, METH_VARARGS,
     "canonical_body(name, trace_id, span_id, parent_span_id, status_code, status_message, attributes, hashed,"
     " classify, max_names) -> bytes or None\n\nThe canonical body, or None when Python must write it."},
    {"compact_json", compact_json, METH_O,
     "compact_json(mapping) -> str or None\n\nA dict as compact ASCII JSON, or None when Python must write it."},
    {"top_entries", top_entries, METH_VARARGS,
     "top_entries(escaped_names, rows, k, resolution) -> list of str or None\n\n`codec.reasons.encode_top`"
     " of rows of floats, or None when Python must write them."},
    {"otlp_attributes", otlp_attributes, METH_VARARGS,
     "otlp_attributes(tag, attributes) -> bytes or None\n\nRepeated KeyValue field `tag`, or None when Python"
     " must write it."},
    {"blake2b_rows", blake2b_rows, METH_VARARGS,
     "blake2b_rows(key, person, digest_size, data, n, width) -> list of str\n\nThe keyed BLAKE2b hex digest of"
     " each of the n rows of width bytes in data."},
    {"blake2b_fields", blake2b_fields, METH_VARARGS,
     "blake2b_fields(key, person, digest_size, texts, tails) -> list of str or None\n\nThe keyed BLAKE2b hex"
     " digest of each text as a length-prefixed field (8 bytes little-endian, then the text) followed by its"
     " tail; None when a text is not ASCII, for Python to encode."},
    {"store_rows", store_rows, METH_VARARGS,
     "store_rows(records, names, json_text, extra, input_key) -> (spans, single, multi) or None\n\nThe rows"
     " `Store.append` builds before its transaction: each record's ``spans`` columns after seq and origin, the"
     " ``decisions`` columns of each record of one decision, and the indexes of records of more; None when"
     " Python must build them."},
    {"numbered_rows", numbered_rows, METH_VARARGS,
     "numbered_rows(records, spans, single, first, origin_of) -> (span rows, decision rows)\n\nThe rows of"
     " `store_rows` numbered from `first`, each span row with its origin id."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) {
    for (int c = 0; c < 256; c++) {
        needs_escape[c] = c < ' ' || c > '~' || c == '"' || c == '\\';
    }
    PyObject *json_encoder = PyImport_ImportModule("json.encoder");
    if (json_encoder == NULL) {
        return NULL;
    }
    for (int f = 0; f < RECORD_FIELDS; f++) {
        if ((record_fields[f] = PyUnicode_InternFromString(RECORD_FIELD_NAMES[f])) == NULL) {
            return NULL;
        }
    }
    for (int f = 0; f < 4; f++) {
        if ((extra_fields[f] = PyUnicode_InternFromString(EXTRA_FIELD_NAMES[f])) == NULL ||
            (origin_fields[f] = PyUnicode_InternFromString(ORIGIN_FIELD_NAMES[f])) == NULL) {
            return NULL;
        }
    }
    if ((attributes_name = PyUnicode_InternFromString("attributes")) == NULL) {
        return NULL;
    }
    escape_text = PyObject_GetAttrString(json_encoder, "encode_basestring_ascii");
    Py_DECREF(json_encoder);
    if (escape_text == NULL) {
        return NULL;
    }
    return PyModule_Create(&module);
}
