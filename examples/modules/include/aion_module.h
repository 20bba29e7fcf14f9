/*
 * aion_module.h: what a C module needs to speak aion's module ABI (version 1, docs/modules.md).
 *
 *   - the host imports of the "aion" namespace: aion_secret_get, aion_log, aion_now;
 *   - the request, read from standard input (at most AION_MAX_REQUEST bytes) and checked whole
 *     before anything is taken from it: RFC 8259 grammar, UTF-8, nesting at most AION_MAX_DEPTH;
 *   - members found by name and strings decoded (escapes, surrogate pairs) into UTF-8;
 *   - a bounded, growable byte buffer with a JSON string writer, and the two response shapes.
 *
 * Only what the ABI needs: a module takes strings out of one request and writes one response. It is
 * written by hand rather than taken from a JSON library so that every limit is visible here and the
 * modules stay small; each function is static, so a module is one translation unit. Every input
 * problem is answered with a response ({"error": ...}) and exit status 0; only running out of memory
 * aborts (a trap, which the host reports as "oom" when the memory is at its limit).
 */
#ifndef AION_MODULE_H
#define AION_MODULE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((import_module("aion"), import_name("secret_get")))
int aion_secret_get(const char *name, int name_len, char *out, int out_cap);
__attribute__((import_module("aion"), import_name("log")))
void aion_log(int level, const char *message, int len);
__attribute__((import_module("aion"), import_name("now")))
long long aion_now(void);

enum { AION_DEBUG = 0, AION_INFO = 1, AION_WARNING = 2, AION_ERROR = 3 };
enum { AION_SECRET_DENIED = -1, AION_SECRET_ABSENT = -2 };

#define AION_MAX_REQUEST ((size_t)4 << 20)  /* bytes of request read; more is declined */
#define AION_MAX_RESPONSE ((size_t)1 << 20) /* what the host accepts on standard output */
#define AION_MAX_DEPTH 64                   /* nested arrays and objects in the request */

/* Every function is static; a module need not use them all. */
#define AION_FN static __attribute__((unused))

/* -- a bounded byte buffer ------------------------------------------------------------------- */

typedef struct {
    char *data;
    size_t len, cap, limit;
    int overflow; /* something did not fit under limit: the content is incomplete */
} aion_buf;

AION_FN void aion_buf_init(aion_buf *b, size_t limit) {
    b->data = NULL;
    b->len = b->cap = 0;
    b->limit = limit;
    b->overflow = 0;
}

AION_FN void aion_buf_free(aion_buf *b) {
    free(b->data);
    aion_buf_init(b, b->limit);
}

/* Room for `extra` more bytes: 1, or 0 (and the overflow flag) when that would pass the limit. */
AION_FN int aion_buf_reserve(aion_buf *b, size_t extra) {
    if (b->overflow)
        return 0;
    if (extra > b->limit - b->len) {
        b->overflow = 1;
        return 0;
    }
    size_t need = b->len + extra;
    if (need <= b->cap)
        return 1;
    size_t cap = b->cap ? b->cap : b->limit < 256 ? b->limit : 256;
    while (cap < need)
        cap = cap > b->limit / 2 ? b->limit : cap * 2;
    char *grown = realloc(b->data, cap);
    if (grown == NULL)
        abort(); /* memory.grow refused: the module is at its memory limit */
    b->data = grown;
    b->cap = cap;
    return 1;
}

AION_FN void aion_put(aion_buf *b, const void *bytes, size_t n) {
    if (n && aion_buf_reserve(b, n)) {
        memcpy(b->data + b->len, bytes, n);
        b->len += n;
    }
}

AION_FN void aion_puts(aion_buf *b, const char *s) { aion_put(b, s, strlen(s)); }

AION_FN void aion_putc(aion_buf *b, char c) { aion_put(b, &c, 1); }

AION_FN void aion_put_uint(aion_buf *b, unsigned long long v) {
    char digits[20];
    int i = (int)sizeof digits;
    do {
        digits[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    aion_put(b, digits + i, sizeof digits - (size_t)i);
}

AION_FN void aion_put_int(aion_buf *b, long long v) {
    if (v < 0) {
        aion_putc(b, '-');
        aion_put_uint(b, 0ull - (unsigned long long)v);
    } else {
        aion_put_uint(b, (unsigned long long)v);
    }
}

/* -- UTF-8 ----------------------------------------------------------------------------------- */

/* The length (1 to 4) of the well-formed UTF-8 sequence at s[0..n), its code point in *cp; 0 when
 * there is none there (a stray continuation byte, a cut sequence, an overlong form, a surrogate, or
 * a code point past U+10FFFF). */
AION_FN size_t aion_utf8(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    size_t len;
    uint32_t v, least;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F, least = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0F, least = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07, least = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < least || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

AION_FN void aion_put_utf8(aion_buf *b, uint32_t cp) {
    char out[4];
    size_t n;
    if (cp < 0x80) {
        out[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    } else if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12)), out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    } else {
        out[0] = (char)(0xF0 | (cp >> 18)), out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), out[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    }
    aion_put(b, out, n);
}

/* The first byte at or after p that a JSON string reader must look at: '"', '\\', a control
 * character or a byte of a multi-byte UTF-8 sequence. Eight bytes at a time while it can: the
 * request's text is most of the request, and it is read several times. */
AION_FN const char *aion_json_plain(const char *p, const char *end) {
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    while (end - p >= 8) {
        uint64_t x, quote, backslash;
        memcpy(&x, p, 8);
        quote = x ^ (ones * '"');
        backslash = x ^ (ones * '\\');
        /* a byte below 0x20, a zero byte of quote or backslash, or a high bit: one is there */
        if ((((x - ones * 0x20) & ~x) | ((quote - ones) & ~quote) | ((backslash - ones) & ~backslash) | x) &
            highs)
            break;
        p += 8;
    }
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == '"' || c == '\\' || c >= 0x80)
            break;
        p++;
    }
    return p;
}

/* s[0..n) as a JSON string, quotes included: '"', '\' and control characters escaped, and any byte
 * that is not part of well-formed UTF-8 replaced with U+FFFD, so the output is always valid. */
AION_FN void aion_put_json_string(aion_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    size_t i = 0, run = 0;
    aion_putc(b, '"');
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i = (size_t)(aion_json_plain(s + i + 1, s + n) - s);
            continue;
        }
        if (c >= 0x80) {
            uint32_t cp;
            size_t k = aion_utf8((const unsigned char *)s + i, n - i, &cp);
            if (k) {
                i += k;
                continue;
            }
        }
        aion_put(b, s + run, i - run);
        switch (c) {
        case '"': aion_puts(b, "\\\""); break;
        case '\\': aion_puts(b, "\\\\"); break;
        case '\n': aion_puts(b, "\\n"); break;
        case '\r': aion_puts(b, "\\r"); break;
        case '\t': aion_puts(b, "\\t"); break;
        case '\b': aion_puts(b, "\\b"); break;
        case '\f': aion_puts(b, "\\f"); break;
        default:
            if (c < 0x20) {
                char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                aion_put(b, esc, sizeof esc);
            } else {
                aion_puts(b, "\xEF\xBF\xBD");
            }
        }
        run = ++i;
    }
    aion_put(b, s + run, i - run);
    aion_putc(b, '"');
}

/* -- reading JSON ---------------------------------------------------------------------------- */

AION_FN const char *aion_json_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

AION_FN int aion_hex4(const char *p, const char *end, uint32_t *v) {
    if (end - p < 4)
        return 0;
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return 0;
        *v = (*v << 4) | d;
    }
    return 1;
}

/* The end of the JSON string at p (p[0] is '"'), or NULL when it is not a valid one: a raw control
 * character, a bad escape, bytes that are not UTF-8, no closing quote before `end`. When `out` is
 * given, the decoded text is appended to it (a lone surrogate escape becomes U+FFFD). */
AION_FN const char *aion_json_string(const char *p, const char *end, aion_buf *out) {
    if (p >= end || *p != '"')
        return NULL;
    const char *run = ++p;
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            if (out)
                aion_put(out, run, (size_t)(p - run));
            return p + 1;
        }
        if (c < 0x20)
            return NULL;
        if (c >= 0x80) {
            uint32_t cp;
            size_t k = aion_utf8((const unsigned char *)p, (size_t)(end - p), &cp);
            if (!k)
                return NULL;
            p += k;
            continue;
        }
        if (c != '\\') {
            p = aion_json_plain(p + 1, end);
            continue;
        }
        if (out)
            aion_put(out, run, (size_t)(p - run));
        if (end - p < 2)
            return NULL;
        char escape = p[1], literal = 0;
        p += 2;
        switch (escape) {
        case '"': literal = '"'; break;
        case '\\': literal = '\\'; break;
        case '/': literal = '/'; break;
        case 'b': literal = '\b'; break;
        case 'f': literal = '\f'; break;
        case 'n': literal = '\n'; break;
        case 'r': literal = '\r'; break;
        case 't': literal = '\t'; break;
        case 'u': {
            uint32_t u, low;
            if (!aion_hex4(p, end, &u))
                return NULL;
            p += 4;
            if (u >= 0xD800 && u <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
                aion_hex4(p + 2, end, &low) && low >= 0xDC00 && low <= 0xDFFF) {
                u = 0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00);
                p += 6;
            }
            if (u >= 0xD800 && u <= 0xDFFF)
                u = 0xFFFD;
            if (out)
                aion_put_utf8(out, u);
            break;
        }
        default: return NULL;
        }
        if (literal && out)
            aion_putc(out, literal);
        run = p;
    }
    return NULL;
}

AION_FN int aion_is_digit(char c) { return c >= '0' && c <= '9'; }

AION_FN const char *aion_json_number(const char *p, const char *end) {
    if (p < end && *p == '-')
        p++;
    if (p >= end || !aion_is_digit(*p))
        return NULL;
    if (*p == '0')
        p++;
    else
        while (p < end && aion_is_digit(*p))
            p++;
    if (p < end && *p == '.') {
        if (++p >= end || !aion_is_digit(*p))
            return NULL;
        while (p < end && aion_is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !aion_is_digit(*p))
            return NULL;
        while (p < end && aion_is_digit(*p))
            p++;
    }
    return p;
}

AION_FN const char *aion_json_literal(const char *p, const char *end, const char *word) {
    size_t n = strlen(word);
    return (size_t)(end - p) >= n && memcmp(p, word, n) == 0 ? p + n : NULL;
}

/* The end of the JSON value at p (after leading whitespace), or NULL when there is no valid one;
 * arrays and objects nest at most AION_MAX_DEPTH - depth deep. */
AION_FN const char *aion_json_value(const char *p, const char *end, int depth) {
    p = aion_json_ws(p, end);
    if (p >= end)
        return NULL;
    switch (*p) {
    case '"': return aion_json_string(p, end, NULL);
    case 't': return aion_json_literal(p, end, "true");
    case 'f': return aion_json_literal(p, end, "false");
    case 'n': return aion_json_literal(p, end, "null");
    case '{':
    case '[': {
        int object = *p == '{';
        char close = object ? '}' : ']';
        if (depth >= AION_MAX_DEPTH)
            return NULL;
        p = aion_json_ws(p + 1, end);
        if (p < end && *p == close)
            return p + 1;
        for (;;) {
            if (object) {
                p = aion_json_string(p, end, NULL);
                if (p == NULL)
                    return NULL;
                p = aion_json_ws(p, end);
                if (p >= end || *p != ':')
                    return NULL;
                p++;
            }
            p = aion_json_value(p, end, depth + 1);
            if (p == NULL)
                return NULL;
            p = aion_json_ws(p, end);
            if (p >= end)
                return NULL;
            if (*p == close)
                return p + 1;
            if (*p != ',')
                return NULL;
            p = aion_json_ws(p + 1, end);
        }
    }
    default: return aion_json_number(p, end);
    }
}

/* 1 when doc[0..n) is exactly one JSON value with nothing but whitespace around it. */
AION_FN int aion_json_valid(const char *doc, size_t n) {
    const char *end = doc + n, *p = aion_json_value(doc, end, 0);
    return p != NULL && aion_json_ws(p, end) == end;
}

/* The value of member `key` of the object at p (whitespace before it skipped), inside a document
 * that aion_json_valid accepted; NULL when there is no such member. Of duplicate members the last
 * counts, as in the json module of the Python host. */
AION_FN const char *aion_json_member(const char *p, const char *end, const char *key) {
    size_t key_len = strlen(key);
    const char *found = NULL;
    p = aion_json_ws(p, end);
    if (p >= end || *p != '{')
        return NULL;
    p = aion_json_ws(p + 1, end);
    if (p < end && *p == '}')
        return NULL;
    while (p < end) {
        const char *name = p + 1, *after = aion_json_string(p, end, NULL);
        if (after == NULL)
            return NULL;
        size_t raw_len = (size_t)(after - 1 - name);
        int match;
        if (memchr(name, '\\', raw_len) == NULL) {
            match = raw_len == key_len && memcmp(name, key, key_len) == 0;
        } else {
            aion_buf decoded;
            aion_buf_init(&decoded, key_len + 1);
            aion_json_string(p, end, &decoded);
            match = !decoded.overflow && decoded.len == key_len &&
                    (key_len == 0 || memcmp(decoded.data, key, key_len) == 0);
            aion_buf_free(&decoded);
        }
        p = aion_json_ws(after, end);
        if (p >= end || *p != ':')
            return NULL;
        p = aion_json_ws(p + 1, end);
        if (match)
            found = p;
        p = aion_json_value(p, end, 1);
        if (p == NULL)
            return NULL;
        p = aion_json_ws(p, end);
        if (p >= end || *p != ',')
            return found;
        p = aion_json_ws(p + 1, end);
    }
    return found;
}

/* Member `key` of the object at `object` decoded into `out`: 1 when it is a string, 0 when there is
 * no such member, -1 when it is not a string. */
AION_FN int aion_json_get_string(const char *object, const char *end, const char *key, aion_buf *out) {
    const char *value = aion_json_member(object, end, key);
    if (value == NULL)
        return 0;
    if (*value != '"')
        return -1;
    return aion_json_string(value, end, out) != NULL ? 1 : -1;
}

/* -- the request and the response ------------------------------------------------------------ */

AION_FN void aion_write_all(const char *p, size_t n) {
    while (n > 0) {
        ssize_t k = write(1, p, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += k;
        n -= (size_t)k;
    }
}

/* Writes {"error": {"code": code, "message": message}}: the module declines the input. */
AION_FN void aion_decline(const char *code, const char *message) {
    aion_buf b;
    aion_buf_init(&b, 4096);
    aion_puts(&b, "{\"error\":{\"code\":");
    aion_put_json_string(&b, code, strlen(code));
    aion_puts(&b, ",\"message\":");
    aion_put_json_string(&b, message, strlen(message));
    aion_puts(&b, "}}\n");
    aion_write_all(b.data, b.len);
    aion_buf_free(&b);
}

typedef struct {
    aion_buf raw;      /* the request's bytes */
    const char *end;   /* their end */
    const char *input; /* the "input" object */
} aion_request;

/* Reads the request from standard input and checks it: valid JSON, an object, "abi": 1, an "input"
 * object. 1 when it is good; else the module's answer (an error response) has been written, and the
 * module only has to exit with status 0. */
AION_FN int aion_request_read(aion_request *req) {
    aion_buf *raw = &req->raw;
    aion_buf_init(raw, AION_MAX_REQUEST + 1);
    for (;;) {
        size_t room = raw->limit - raw->len;
        if (room == 0) {
            aion_decline("INPUT_TOO_LARGE", "the request is larger than 4 MiB");
            return 0;
        }
        if (raw->len == raw->cap)
            aion_buf_reserve(raw, room < 65536 ? room : 65536);
        size_t space = raw->cap - raw->len;
        ssize_t k = read(0, raw->data + raw->len, space < room ? space : room);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            aion_decline("BAD_REQUEST", "standard input could not be read");
            return 0;
        }
        if (k == 0)
            break;
        raw->len += (size_t)k;
    }
    const char *doc = raw->data ? raw->data : "";
    req->end = doc + raw->len;
    if (!aion_json_valid(doc, raw->len)) {
        aion_decline("BAD_REQUEST", "the request is not one JSON document (UTF-8, nested at most 64 deep)");
        return 0;
    }
    if (*aion_json_ws(doc, req->end) != '{') {
        aion_decline("BAD_REQUEST", "the request is not a JSON object");
        return 0;
    }
    const char *abi = aion_json_member(doc, req->end, "abi");
    if (abi == NULL || *abi != '1' || aion_json_number(abi, req->end) != abi + 1) {
        aion_decline("BAD_REQUEST", "the request's \"abi\" is not 1, the version this module speaks");
        return 0;
    }
    req->input = aion_json_member(doc, req->end, "input");
    if (req->input == NULL || *req->input != '{') {
        aion_decline("BAD_REQUEST", "the request has no \"input\" object");
        return 0;
    }
    return 1;
}

/* Reads the request and its input.text into `text` (the request itself is freed): 1 when there is
 * one; else the module's answer (BAD_REQUEST, or what aion_request_read answered) has been written,
 * and the module only has to exit with status 0. */
AION_FN int aion_request_text(aion_buf *text) {
    aion_request req;
    if (!aion_request_read(&req))
        return 0;
    aion_buf_init(text, AION_MAX_REQUEST);
    int got = aion_json_get_string(req.input, req.end, "text", text);
    aion_buf_free(&req.raw);
    if (got != 1) {
        aion_decline("BAD_REQUEST", got == 0 ? "the request has no input.text" : "input.text is not a string");
        return 0;
    }
    return 1;
}

/* Starts {"output": {"text": ... in `b`; the module then adds "," and its other fields. */
AION_FN void aion_output_begin(aion_buf *b, const char *text, size_t len) {
    aion_buf_init(b, AION_MAX_RESPONSE);
    aion_puts(b, "{\"output\":{\"text\":");
    aion_put_json_string(b, text, len);
}

/* Closes the response begun by aion_output_begin and writes it; one larger than the host accepts
 * becomes an OUTPUT_TOO_LARGE error instead. */
AION_FN void aion_output_end(aion_buf *b) {
    aion_puts(b, "}}\n");
    if (b->overflow)
        aion_decline("OUTPUT_TOO_LARGE", "the answer would be larger than the 1 MiB a response may have");
    else
        aion_write_all(b->data, b->len);
    aion_buf_free(b);
}

/* One log line from the buffer's content (the host cuts it to 1,024 bytes). */
AION_FN void aion_log_buf(int level, const aion_buf *b) {
    aion_log(level, b->data ? b->data : "", (int)b->len);
}

#endif
