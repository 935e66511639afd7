/* OTLP ExportTraceServiceRequest bytes -> the buffers of a SpanBatch's Arrow columns.
 *
 * The decode workers' largest cost was making a Python object for every attribute (upb's
 * message objects, then dicts, then orjson encoding them again). This walks the protobuf wire
 * format once and writes what the warehouse stores: ids as hex, strings as they are, attributes,
 * events and links as JSON text. No Python object is made per span, and the GIL is released.
 *
 * It decodes only what it can decode exactly as spanpipe.otlp's Python decoder (upb) would, and
 * otherwise answers None so that the caller uses that decoder: a span the decoder rejects, an
 * attribute value JSON cannot hold (bytes, NaN, +-Infinity), a repeated key, a message field sent
 * twice (protobuf would merge them), a field of an unexpected wire type, bad UTF-8, malformed
 * input. The answer for such a request, its error or its partial success, is the Python one.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

typedef enum { OK = 0, FALLBACK = 1, NOMEM = 2 } status;

#define TRY(expr) do { status s_ = (expr); if (s_ != OK) return s_; } while (0)

#define MAX_DEPTH 32           /* nested arrays / kvlists; deeper goes to the Python decoder */
#define MAX_COLUMN_BYTES 0x7fffff00u  /* Arrow `string` offsets are int32 */

/* ---- growable byte buffers ---- */

typedef struct {
    char *p;
    size_t len, cap;
} buf;

static status reserve(buf *b, size_t extra) {
    if (b->len + extra <= b->cap)
        return OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return NOMEM;
    b->p = p;
    b->cap = cap;
    return OK;
}

static status put(buf *b, const void *src, size_t n) {
    if (!n)
        return OK; /* b->p may still be NULL */
    TRY(reserve(b, n));
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return OK;
}

static status put_char(buf *b, char c) {
    TRY(reserve(b, 1));
    b->p[b->len++] = c;
    return OK;
}

#define PUT_LITERAL(b, s) put((b), (s), sizeof(s) - 1)

/* ---- the wire format ---- */

typedef struct {
    const uint8_t *p, *end;
} reader;

typedef struct {
    const uint8_t *p;
    size_t len;
} bytes_ref;

static status varint(reader *r, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end)
            return FALLBACK;
        uint8_t c = *r->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return OK;
        }
    }
    return FALLBACK;
}

static status tag(reader *r, uint32_t *field, uint32_t *wire) {
    uint64_t t;
    TRY(varint(r, &t));
    if (t >> 32 || (t >> 3) == 0)
        return FALLBACK;
    *field = (uint32_t)(t >> 3);
    *wire = (uint32_t)(t & 7);
    return OK;
}

static status length_delimited(reader *r, bytes_ref *out) {
    uint64_t n;
    TRY(varint(r, &n));
    if (n > (uint64_t)(r->end - r->p))
        return FALLBACK;
    out->p = r->p;
    out->len = (size_t)n;
    r->p += n;
    return OK;
}

static status fixed64(reader *r, uint64_t *out) {
    if (r->end - r->p < 8)
        return FALLBACK;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | r->p[i];
    r->p += 8;
    *out = v;
    return OK;
}

/* A known field's value, when it came with the wire type its declaration gives. */
static status bytes_field(reader *r, uint32_t wire, bytes_ref *out) {
    return wire == 2 ? length_delimited(r, out) : FALLBACK;
}

static status fixed64_field(reader *r, uint32_t wire, uint64_t *out) {
    return wire == 1 ? fixed64(r, out) : FALLBACK;
}

static status varint_field(reader *r, uint32_t wire, uint64_t *out) {
    return wire == 0 ? varint(r, out) : FALLBACK;
}

/* An unknown field; groups (wire types 3, 4) are not in OTLP and go to the Python decoder. */
static status skip(reader *r, uint32_t wire) {
    uint64_t ignored;
    bytes_ref ref;
    switch (wire) {
    case 0: return varint(r, &ignored);
    case 1: return fixed64(r, &ignored);
    case 2: return length_delimited(r, &ref);
    case 5:
        if (r->end - r->p < 4)
            return FALLBACK;
        r->p += 4;
        return OK;
    default: return FALLBACK;
    }
}

static reader reader_of(bytes_ref ref) {
    reader r = {ref.p, ref.p + ref.len};
    return r;
}

/* Marks a singular field seen; a second one goes to the Python decoder (messages would merge). */
static status once(uint32_t *seen, uint32_t field) {
    uint32_t bit = 1u << (field & 31);
    if (*seen & bit)
        return FALLBACK;
    *seen |= bit;
    return OK;
}

/* ---- UTF-8 (as strict as upb: no overlongs, surrogates or values past U+10FFFF) ---- */

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

static uint64_t load8(const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

static int valid_utf8(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n && !(load8(s + i) & HIGHS)) { /* eight ASCII bytes */
            i += 8;
            continue;
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint8_t lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) need = 1;
        else if (c == 0xe0) { need = 2; lo = 0xa0; }
        else if (c == 0xed) { need = 2; hi = 0x9f; }
        else if (c >= 0xe1 && c <= 0xef) need = 2;
        else if (c == 0xf0) { need = 3; lo = 0x90; }
        else if (c == 0xf4) { need = 3; hi = 0x8f; }
        else if (c >= 0xf1 && c <= 0xf3) need = 3;
        else return 0;
        if (n - i <= need)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
        i += need + 1;
    }
    return 1;
}

/* ---- JSON ---- */

static const char HEX[] = "0123456789abcdef";

static status json_string(buf *b, bytes_ref s) {
    if (!valid_utf8(s.p, s.len))
        return FALLBACK;
    TRY(reserve(b, s.len * 6 + 2));
    char *o = b->p + b->len;
    *o++ = '"';
    for (size_t i = 0; i < s.len; i++) {
        /* Eight bytes at a time while none is below 0x20, '"' or '\\' (UTF-8 is copied as is). */
        while (i + 8 <= s.len) {
            uint64_t w = load8(s.p + i);
            uint64_t quote = w ^ (ONES * '"'), backslash = w ^ (ONES * '\\');
            uint64_t special = ((w - ONES * 0x20) | (quote - ONES) | (backslash - ONES))
                               & ~w & HIGHS;
            if (special)
                break;
            memcpy(o, &w, 8);
            o += 8;
            i += 8;
        }
        if (i >= s.len)
            break;
        uint8_t c = s.p[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        default:
            *o++ = 'u'; *o++ = '0'; *o++ = '0';
            *o++ = HEX[c >> 4]; *o++ = HEX[c & 15];
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->p);
    return OK;
}

/* The shortest of 15, 16 or 17 significant digits that reads back as the same double, written
 * so that it reads back as a float, not an int ("2.0", not "2"). */
static status json_double(buf *b, double d) {
    if (!isfinite(d))
        return FALLBACK;
    char text[40];
    int n = 0;
    for (int digits = 15; digits <= 17; digits++) {
        n = snprintf(text, sizeof text, "%.*g", digits, d);
        if (strtod(text, NULL) == d)
            break;
    }
    if (!strpbrk(text, ".eE"))
        text[n++] = '.', text[n++] = '0';
    return put(b, text, (size_t)n);
}

static status json_int(buf *b, int64_t v) {
    char text[24];
    int n = snprintf(text, sizeof text, "%lld", (long long)v);
    return put(b, text, (size_t)n);
}

static status json_uint(buf *b, uint64_t v) {
    char text[24];
    int n = snprintf(text, sizeof text, "%llu", (unsigned long long)v);
    return put(b, text, (size_t)n);
}

static status hex(buf *b, bytes_ref id) {
    TRY(reserve(b, id.len * 2));
    char *o = b->p + b->len;
    for (size_t i = 0; i < id.len; i++) {
        *o++ = HEX[id.p[i] >> 4];
        *o++ = HEX[id.p[i] & 15];
    }
    b->len += id.len * 2;
    return OK;
}

static status json_hex(buf *b, bytes_ref id) {
    TRY(put_char(b, '"'));
    TRY(hex(b, id));
    return put_char(b, '"');
}

/* The keys of the JSON objects being written, innermost last: a repeated key (a Python dict
 * would keep one) goes to the Python decoder. */
typedef struct {
    bytes_ref *keys;
    size_t len, cap;
} key_stack;

static status key_is_new(key_stack *ks, size_t object_start, bytes_ref key) {
    for (size_t i = object_start; i < ks->len; i++)
        if (ks->keys[i].len == key.len && memcmp(ks->keys[i].p, key.p, key.len) == 0)
            return FALLBACK;
    if (ks->len == ks->cap) {
        size_t cap = ks->cap ? ks->cap * 2 : 64;
        bytes_ref *keys = realloc(ks->keys, cap * sizeof *keys);
        if (!keys)
            return NOMEM;
        ks->keys = keys;
        ks->cap = cap;
    }
    ks->keys[ks->len++] = key;
    return OK;
}

static status any_value(key_stack *keys, buf *b, bytes_ref msg, int depth);

/* One opentelemetry.proto.common.v1.KeyValue as `"key":value` (its fields in either order). */
static status key_value(key_stack *keys, buf *b, bytes_ref msg, size_t object_start, int first, int depth) {
    reader r = reader_of(msg);
    bytes_ref key = {(const uint8_t *)"", 0}, value = {NULL, 0};
    uint32_t seen = 0, field, wire;
    while (r.p < r.end) {
        TRY(tag(&r, &field, &wire));
        if (field == 1 || field == 2) {
            TRY(once(&seen, field));
            TRY(bytes_field(&r, wire, field == 1 ? &key : &value));
        } else {
            TRY(skip(&r, wire));
        }
    }
    TRY(key_is_new(keys, object_start, key));
    if (!first)
        TRY(put_char(b, ','));
    TRY(json_string(b, key));
    TRY(put_char(b, ':'));
    if (!value.p)
        return PUT_LITERAL(b, "null");
    return any_value(keys, b, value, depth);
}

/* Every KeyValue field `field_number` of `msg` as one JSON object. */
static status attributes(key_stack *keys, buf *b, bytes_ref msg, uint32_t field_number, int depth) {
    if (depth > MAX_DEPTH)
        return FALLBACK;
    size_t object_start = keys->len;
    reader r = reader_of(msg);
    uint32_t field, wire;
    int first = 1;
    TRY(put_char(b, '{'));
    while (r.p < r.end) {
        TRY(tag(&r, &field, &wire));
        if (field != field_number) {
            TRY(skip(&r, wire));
            continue;
        }
        bytes_ref kv;
        TRY(bytes_field(&r, wire, &kv));
        TRY(key_value(keys, b, kv, object_start, first, depth));
        first = 0;
    }
    keys->len = object_start;
    return put_char(b, '}');
}

static status array_value(key_stack *keys, buf *b, bytes_ref msg, int depth) {
    if (depth > MAX_DEPTH)
        return FALLBACK;
    reader r = reader_of(msg);
    uint32_t field, wire;
    int first = 1;
    TRY(put_char(b, '['));
    while (r.p < r.end) {
        TRY(tag(&r, &field, &wire));
        if (field != 1) {
            TRY(skip(&r, wire));
            continue;
        }
        bytes_ref v;
        TRY(bytes_field(&r, wire, &v));
        if (!first)
            TRY(put_char(b, ','));
        TRY(any_value(keys, b, v, depth));
        first = 0;
    }
    return put_char(b, ']');
}

/* opentelemetry.proto.common.v1.AnyValue: one member of its oneof, or none (null). */
static status any_value(key_stack *keys, buf *b, bytes_ref msg, int depth) {
    reader r = reader_of(msg);
    uint32_t which = 0, field, wire;
    bytes_ref ref = {NULL, 0};
    uint64_t number = 0;
    while (r.p < r.end) {
        TRY(tag(&r, &field, &wire));
        if (field < 1 || field > 7) {
            TRY(skip(&r, wire));
            continue;
        }
        if (which)
            return FALLBACK; /* a second member: protobuf keeps the last, or merges */
        which = field;
        switch (field) {
        case 1: case 5: case 6:
            TRY(bytes_field(&r, wire, &ref));
            break;
        case 2: case 3:
            TRY(varint_field(&r, wire, &number));
            break;
        case 4:
            TRY(fixed64_field(&r, wire, &number));
            break;
        default:
            return FALLBACK; /* bytes_value: stored as base64 text, read back as bytes */
        }
    }
    switch (which) {
    case 0: return PUT_LITERAL(b, "null");
    case 1: return json_string(b, ref);
    case 2: return number ? PUT_LITERAL(b, "true") : PUT_LITERAL(b, "false");
    case 3: return json_int(b, (int64_t)number);
    case 4: {
        double d;
        memcpy(&d, &number, sizeof d);
        return json_double(b, d);
    }
    case 5: return array_value(keys, b, ref, depth + 1);
    default: return attributes(keys, b, ref, 1, depth + 1);
    }
}

/* ---- columns ---- */

typedef struct {
    buf offsets; /* int32, one more than rows */
    buf data;
    buf validity; /* bit per row; kept only for columns that have nulls */
    size_t nulls;
} string_column;

static status end_row(string_column *c) {
    if (c->data.len > MAX_COLUMN_BYTES)
        return FALLBACK;
    int32_t end = (int32_t)c->data.len;
    return put(&c->offsets, &end, sizeof end);
}

static status set_valid(string_column *c, size_t row, int valid) {
    size_t byte = row / 8;
    if (byte >= c->validity.len) {
        TRY(reserve(&c->validity, byte + 1 - c->validity.len));
        memset(c->validity.p + c->validity.len, 0, byte + 1 - c->validity.len);
        c->validity.len = byte + 1;
    }
    if (valid)
        c->validity.p[byte] |= (char)(1u << (row % 8));
    else
        c->nulls++;
    return OK;
}

/* A string already checked for UTF-8 (a scope's, once per scope rather than per span). */
static status checked_cell(string_column *c, bytes_ref s) {
    TRY(put(&c->data, s.p, s.len));
    return end_row(c);
}

static status string_cell(string_column *c, bytes_ref s) {
    return valid_utf8(s.p, s.len) ? checked_cell(c, s) : FALLBACK;
}

enum {
    TRACE_ID, SPAN_ID, PARENT_SPAN_ID, TRACE_STATE, NAME, STATUS_MESSAGE, SCOPE_NAME, SCOPE_VERSION,
    ATTRIBUTES, EVENTS, LINKS, STRING_COLUMNS
};
enum { KIND, STATUS_CODE, RESOURCE_INDEX, INT32_COLUMNS };
enum { START, END, INT64_COLUMNS };

typedef struct {
    string_column strings[STRING_COLUMNS];
    buf int32s[INT32_COLUMNS];
    buf int64s[INT64_COLUMNS];
    size_t rows;
    buf resource_attributes; /* JSON objects, one after another */
    buf resource_ends;       /* size_t end offset of each */
    buf schema_urls;         /* bytes_ref of each */
    size_t resources;
    key_stack keys;
} decoder;

static status put_int32(buf *b, int32_t v) { return put(b, &v, sizeof v); }
static status put_int64(buf *b, int64_t v) { return put(b, &v, sizeof v); }

/* ---- OTLP trace messages ---- */

static status scope_of(bytes_ref msg, bytes_ref *name, bytes_ref *version, key_stack *keys) {
    reader r = reader_of(msg);
    uint32_t seen = 0, field, wire;
    while (r.p < r.end) {
        TRY(tag(&r, &field, &wire));
        if (field == 1 || field == 2) {
            TRY(once(&seen, field));
            TRY(bytes_field(&r, wire, field == 1 ? name : version));
        } else {
            TRY(skip(&r, wire));
        }
    }
    /* Checked even for a scope without spans, and its attributes though not stored: upb checks
     * every string, and bad UTF-8 anywhere fails the request. */
    if (!valid_utf8(name->p, name->len) || !valid_utf8(version->p, version->len))
        return FALLBACK;
    buf ignored = {0};
    status s = attributes(keys, &ignored, msg, 3, 0);
    free(ignored.p);
    return s;
}

static status status_of(bytes_ref msg, bytes_ref *message, int32_t *code) {
    reader r = reader_of(msg);
    uint32_t field, wire;
    uint64_t v;
    while (r.p < r.end) {
        TRY(tag(&r, &field, &wire));
        if (field == 2) {
            TRY(bytes_field(&r, wire, message));
        } else if (field == 3) {
            TRY(varint_field(&r, wire, &v));
            *code = (int32_t)v;
        } else {
            TRY(skip(&r, wire));
        }
    }
    return OK;
}

/* {"time_unix_nano":…,"name":…,"attributes":{…}} as the Python decoder writes an event. */
static status span_event(decoder *d, buf *b, bytes_ref msg) {
    reader r = reader_of(msg);
    uint32_t field, wire;
    uint64_t time = 0;
    bytes_ref name = {(const uint8_t *)"", 0};
    while (r.p < r.end) {
        TRY(tag(&r, &field, &wire));
        if (field == 1) {
            TRY(fixed64_field(&r, wire, &time));
        } else if (field == 2) {
            TRY(bytes_field(&r, wire, &name));
        } else {
            TRY(skip(&r, wire));
        }
    }
    TRY(PUT_LITERAL(b, "{\"time_unix_nano\":"));
    TRY(json_uint(b, time));
    TRY(PUT_LITERAL(b, ",\"name\":"));
    TRY(json_string(b, name));
    TRY(PUT_LITERAL(b, ",\"attributes\":"));
    TRY(attributes(&d->keys, b, msg, 3, 0));
    return put_char(b, '}');
}

static status span_link(decoder *d, buf *b, bytes_ref msg) {
    reader r = reader_of(msg);
    uint32_t field, wire;
    bytes_ref empty = {(const uint8_t *)"", 0};
    bytes_ref trace_id = empty, span_id = empty, trace_state = empty;
    while (r.p < r.end) {
        TRY(tag(&r, &field, &wire));
        if (field >= 1 && field <= 3) {
            TRY(bytes_field(&r, wire, field == 1 ? &trace_id : field == 2 ? &span_id : &trace_state));
        } else {
            TRY(skip(&r, wire));
        }
    }
    TRY(PUT_LITERAL(b, "{\"trace_id\":"));
    TRY(json_hex(b, trace_id));
    TRY(PUT_LITERAL(b, ",\"span_id\":"));
    TRY(json_hex(b, span_id));
    TRY(PUT_LITERAL(b, ",\"trace_state\":"));
    TRY(json_string(b, trace_state));
    TRY(PUT_LITERAL(b, ",\"attributes\":"));
    TRY(attributes(&d->keys, b, msg, 4, 0));
    return put_char(b, '}');
}

#define INT64_LIMIT ((uint64_t)1 << 63)

/* One opentelemetry.proto.trace.v1.Span as a row. A span the Python decoder would reject (an id
 * of the wrong length, a time past 2^63) sends the request there, for its message. */
static status span(decoder *d, bytes_ref msg, bytes_ref scope_name, bytes_ref scope_version,
                   int32_t resource) {
    reader r = reader_of(msg);
    uint32_t seen = 0, field, wire;
    bytes_ref empty = {(const uint8_t *)"", 0};
    bytes_ref trace_id = empty, span_id = empty, parent = empty, trace_state = empty, name = empty;
    bytes_ref status_message = empty, ref;
    uint64_t start = 0, end = 0, v;
    int32_t kind = 0, code = 0;
    int events = 0, links = 0;
    buf *attrs = &d->strings[ATTRIBUTES].data, *evs = &d->strings[EVENTS].data;
    buf *lks = &d->strings[LINKS].data;
    size_t attrs_start = d->keys.len;

    TRY(put_char(attrs, '{'));
    while (r.p < r.end) {
        TRY(tag(&r, &field, &wire));
        switch (field) {
        case 1: case 2: case 3: case 4: case 5:
            TRY(bytes_field(&r, wire, field == 1 ? &trace_id : field == 2 ? &span_id
                                     : field == 3 ? &trace_state : field == 4 ? &parent : &name));
            break;
        case 6:
            TRY(varint_field(&r, wire, &v));
            kind = (int32_t)v;
            break;
        case 7: case 8:
            TRY(fixed64_field(&r, wire, field == 7 ? &start : &end));
            break;
        case 9:
            TRY(bytes_field(&r, wire, &ref));
            TRY(key_value(&d->keys, attrs, ref, attrs_start, d->keys.len == attrs_start, 0));
            break;
        case 11:
            TRY(bytes_field(&r, wire, &ref));
            TRY(put_char(evs, events++ ? ',' : '['));
            TRY(span_event(d, evs, ref));
            break;
        case 13:
            TRY(bytes_field(&r, wire, &ref));
            TRY(put_char(lks, links++ ? ',' : '['));
            TRY(span_link(d, lks, ref));
            break;
        case 15:
            TRY(once(&seen, field));
            TRY(bytes_field(&r, wire, &ref));
            TRY(status_of(ref, &status_message, &code));
            break;
        default:
            TRY(skip(&r, wire));
        }
    }
    d->keys.len = attrs_start;
    if (trace_id.len != 16 || span_id.len != 8 || (parent.len && parent.len != 8)
        || start >= INT64_LIMIT || end >= INT64_LIMIT)
        return FALLBACK;

    TRY(put_char(attrs, '}'));
    TRY(end_row(&d->strings[ATTRIBUTES]));
    TRY(events ? put_char(evs, ']') : PUT_LITERAL(evs, "[]"));
    TRY(end_row(&d->strings[EVENTS]));
    TRY(links ? put_char(lks, ']') : PUT_LITERAL(lks, "[]"));
    TRY(end_row(&d->strings[LINKS]));

    TRY(hex(&d->strings[TRACE_ID].data, trace_id));
    TRY(end_row(&d->strings[TRACE_ID]));
    TRY(hex(&d->strings[SPAN_ID].data, span_id));
    TRY(end_row(&d->strings[SPAN_ID]));
    TRY(hex(&d->strings[PARENT_SPAN_ID].data, parent));
    TRY(set_valid(&d->strings[PARENT_SPAN_ID], d->rows, parent.len != 0));
    TRY(end_row(&d->strings[PARENT_SPAN_ID]));
    TRY(string_cell(&d->strings[TRACE_STATE], trace_state));
    TRY(string_cell(&d->strings[NAME], name));
    TRY(string_cell(&d->strings[STATUS_MESSAGE], status_message));
    TRY(checked_cell(&d->strings[SCOPE_NAME], scope_name));
    TRY(checked_cell(&d->strings[SCOPE_VERSION], scope_version));
    TRY(put_int32(&d->int32s[KIND], kind));
    TRY(put_int32(&d->int32s[STATUS_CODE], code));
    TRY(put_int32(&d->int32s[RESOURCE_INDEX], resource));
    TRY(put_int64(&d->int64s[START], (int64_t)start));
    TRY(put_int64(&d->int64s[END], (int64_t)end));
    d->rows++;
    return OK;
}

static status scope_spans(decoder *d, bytes_ref msg, int32_t resource, size_t *spans) {
    bytes_ref empty = {(const uint8_t *)"", 0};
    bytes_ref scope_name = empty, scope_version = empty, ref;
    reader r = reader_of(msg);
    uint32_t seen = 0, field, wire;
    while (r.p < r.end) { /* the scope first: it may follow the spans on the wire */
        TRY(tag(&r, &field, &wire));
        if (field == 1 || field == 3) {
            TRY(once(&seen, field));
            TRY(bytes_field(&r, wire, &ref));
            if (field == 1)
                TRY(scope_of(ref, &scope_name, &scope_version, &d->keys));
            else if (!valid_utf8(ref.p, ref.len))
                return FALLBACK;
        } else {
            TRY(skip(&r, wire));
        }
    }
    r = reader_of(msg);
    while (r.p < r.end) {
        TRY(tag(&r, &field, &wire));
        if (field == 2) {
            TRY(bytes_field(&r, wire, &ref));
            TRY(span(d, ref, scope_name, scope_version, resource));
            (*spans)++;
        } else {
            TRY(skip(&r, wire));
        }
    }
    return OK;
}

/* opentelemetry.proto.common.v1.EntityRef: four string fields (schema_url, type, id_keys,
 * description_keys), each checked for UTF-8. */
static status entity_ref(bytes_ref msg) {
    reader r = reader_of(msg);
    uint32_t field, wire;
    bytes_ref text;
    while (r.p < r.end) {
        TRY(tag(&r, &field, &wire));
        if (field >= 1 && field <= 4) {
            TRY(bytes_field(&r, wire, &text));
            if (!valid_utf8(text.p, text.len))
                return FALLBACK;
        } else {
            TRY(skip(&r, wire));
        }
    }
    return OK;
}

static status resource_spans(decoder *d, bytes_ref msg) {
    bytes_ref resource = {(const uint8_t *)"", 0}, schema_url = {(const uint8_t *)"", 0}, ref;
    reader r = reader_of(msg);
    uint32_t seen = 0, field, wire;
    while (r.p < r.end) {
        TRY(tag(&r, &field, &wire));
        if (field == 1 || field == 3) {
            TRY(once(&seen, field));
            TRY(bytes_field(&r, wire, field == 1 ? &resource : &schema_url));
        } else {
            TRY(skip(&r, wire));
        }
    }
    if (!valid_utf8(schema_url.p, schema_url.len))
        return FALLBACK;
    /* Resource: attributes (1), dropped count (2), entity refs (3): not stored, but upb checks
     * their strings. */
    r = reader_of(resource);
    while (r.p < r.end) {
        TRY(tag(&r, &field, &wire));
        if (field == 3) {
            TRY(bytes_field(&r, wire, &ref));
            TRY(entity_ref(ref));
        } else {
            TRY(skip(&r, wire));
        }
    }
    size_t mark = d->resource_attributes.len;
    TRY(attributes(&d->keys, &d->resource_attributes, resource, 1, 0));

    size_t spans = 0;
    r = reader_of(msg);
    while (r.p < r.end) {
        TRY(tag(&r, &field, &wire));
        if (field == 2) {
            TRY(bytes_field(&r, wire, &ref));
            TRY(scope_spans(d, ref, (int32_t)d->resources, &spans));
        } else {
            TRY(skip(&r, wire));
        }
    }
    if (!spans) { /* as the Python decoder: a resource without spans is not kept */
        d->resource_attributes.len = mark;
        return OK;
    }
    size_t end = d->resource_attributes.len;
    TRY(put(&d->resource_ends, &end, sizeof end));
    TRY(put(&d->schema_urls, &schema_url, sizeof schema_url));
    d->resources++;
    return OK;
}

static status request(decoder *d, bytes_ref msg) {
    reader r = reader_of(msg);
    uint32_t field, wire;
    bytes_ref ref;
    for (int i = 0; i < STRING_COLUMNS; i++)
        TRY(put_int32(&d->strings[i].offsets, 0));
    while (r.p < r.end) {
        TRY(tag(&r, &field, &wire));
        if (field == 1) {
            TRY(bytes_field(&r, wire, &ref));
            TRY(resource_spans(d, ref));
        } else {
            TRY(skip(&r, wire));
        }
    }
    return d->rows ? OK : FALLBACK; /* an empty request: the Python decoder's answer is cheap */
}

static void decoder_free(decoder *d) {
    for (int i = 0; i < STRING_COLUMNS; i++) {
        free(d->strings[i].offsets.p);
        free(d->strings[i].data.p);
        free(d->strings[i].validity.p);
    }
    for (int i = 0; i < INT32_COLUMNS; i++)
        free(d->int32s[i].p);
    for (int i = 0; i < INT64_COLUMNS; i++)
        free(d->int64s[i].p);
    free(d->resource_attributes.p);
    free(d->resource_ends.p);
    free(d->schema_urls.p);
    free(d->keys.keys);
}

/* ---- Python ---- */

static PyObject *bytes_of(buf *b) {
    return PyBytes_FromStringAndSize(b->p ? b->p : "", (Py_ssize_t)b->len);
}

static PyObject *result(decoder *d) {
    PyObject *strings = PyList_New(STRING_COLUMNS), *ints = PyList_New(INT32_COLUMNS + INT64_COLUMNS);
    PyObject *resources = PyList_New((Py_ssize_t)d->resources);
    if (!strings || !ints || !resources)
        goto fail;
    for (int i = 0; i < STRING_COLUMNS; i++) {
        string_column *c = &d->strings[i];
        PyObject *validity = c->nulls ? bytes_of(&c->validity) : Py_NewRef(Py_None);
        PyObject *item = Py_BuildValue("(NNNn)", bytes_of(&c->offsets), bytes_of(&c->data), validity,
                                       (Py_ssize_t)c->nulls);
        if (!item)
            goto fail;
        PyList_SET_ITEM(strings, i, item);
    }
    for (int i = 0; i < INT32_COLUMNS; i++) {
        PyObject *item = bytes_of(&d->int32s[i]);
        if (!item)
            goto fail;
        PyList_SET_ITEM(ints, i, item);
    }
    for (int i = 0; i < INT64_COLUMNS; i++) {
        PyObject *item = bytes_of(&d->int64s[i]);
        if (!item)
            goto fail;
        PyList_SET_ITEM(ints, INT32_COLUMNS + i, item);
    }
    size_t start = 0;
    for (size_t i = 0; i < d->resources; i++) {
        size_t end = ((size_t *)d->resource_ends.p)[i];
        bytes_ref url = ((bytes_ref *)d->schema_urls.p)[i];
        PyObject *item = Py_BuildValue("(y#s#)", d->resource_attributes.p + start, (Py_ssize_t)(end - start),
                                       (const char *)url.p, (Py_ssize_t)url.len);
        if (!item)
            goto fail;
        PyList_SET_ITEM(resources, (Py_ssize_t)i, item);
        start = end;
    }
    return Py_BuildValue("(nNNN)", (Py_ssize_t)d->rows, strings, ints, resources);
fail:
    Py_XDECREF(strings);
    Py_XDECREF(ints);
    Py_XDECREF(resources);
    return NULL;
}

PyDoc_STRVAR(decode_doc,
"decode(request: bytes) -> (rows, string_columns, int_columns, resources) | None\n\n"
"An ExportTraceServiceRequest as column buffers, or None when the Python decoder must decode it.\n"
"string_columns: (int32 offsets, data, validity bitmap or None, null count) for trace_id, span_id,\n"
"parent_span_id, trace_state, name, status_message, scope_name, scope_version, attributes, events,\n"
"links; int_columns: kind, status_code, resource_index (int32), start and end times (int64);\n"
"resources: (attributes JSON, schema_url) of each resource that has spans.");

static PyObject *decode(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer in;
    if (!PyArg_ParseTuple(args, "y*", &in))
        return NULL;
    decoder d;
    memset(&d, 0, sizeof d);
    bytes_ref msg = {in.buf, (size_t)in.len};
    status s;
    Py_BEGIN_ALLOW_THREADS
    s = request(&d, msg);
    Py_END_ALLOW_THREADS
    PyObject *out = NULL;
    if (s == OK)
        out = result(&d);
    else if (s == NOMEM)
        PyErr_NoMemory();
    else
        out = Py_NewRef(Py_None);
    decoder_free(&d);
    PyBuffer_Release(&in);
    return out;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS, decode_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_otlp_columns",
    "OTLP trace requests decoded straight into Arrow column buffers (see spanpipe.otlp_columns).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__otlp_columns(void) { return PyModule_Create(&module); }
