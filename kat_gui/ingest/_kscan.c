/* One-pass scanner for Kineto / Chrome trace JSON: the compiled accelerator of kat_gui/ingest/kineto.py.
 *
 * scan(data, cat_kind, piece_bytes, on_piece) validates the whole document (strict JSON: grammar, escapes,
 * UTF-16 surrogate pairs, UTF-8, nesting) and walks the top-level "traceEvents" array once. For every event it
 * checks what the reader's typed msgspec decode would check (ph/cat/name strings, pid/tid int or str) and counts
 * categories; for the events the reader keeps (ph "X" with a cat in cat_kind) it fills columns: kind, flags,
 * interned name, pid, tid, exact ts/dur in ns, correlation, an interned "args minus instance ids" key and the
 * args byte span. Everything it does not handle exactly like the Python reader raises Unsupported(reason), so
 * the caller runs the Python path instead: this module never decides an error message for the user.
 *
 * Pieces: the Python reader cuts the array into ~piece_bytes pieces at the first "}\s*,\s*{" at or after
 * start + piece_bytes, and some of its interning order is per piece. The scanner cuts at the same places (and
 * gives up when that pattern would fall inside an event, where the Python reader takes another route).
 *
 * Assumes `data` is a bytes object (its terminating NUL is used as a sentinel).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <setjmp.h>
#include <signal.h>
#define GUARD_SIGBUS 1
#endif

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define HOT_INLINE static inline __attribute__((always_inline))

#define MAX_DEPTH 64
#define MAX_ARGS_MEMBERS 256
#define NO_ID INT64_C(-1)

/* flags column bits (mirrored in kineto.py) */
#define F_PID_TEXT 1
#define F_TID_TEXT 2
#define F_TS_SLOW 4
#define F_DUR_SLOW 8
#define F_TYPED 16
#define F_NO_ARGS 32

static PyObject *Unsupported;

/* ------------------------------------------------------------------ growable buffers */

typedef struct {
    char *p;
    size_t len, cap;
} Buf;

static int buf_reserve(Buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    char *q = PyMem_Realloc(b->p, cap);
    if (!q) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = q;
    b->cap = cap;
    return 0;
}

static int buf_put(Buf *b, const void *src, size_t n) {
    if (buf_reserve(b, n)) return -1;
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

static int buf_i64(Buf *b, int64_t v) { return buf_put(b, &v, 8); }

static void buf_free(Buf *b) {
    PyMem_Free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static PyObject *buf_bytes(const Buf *b) { return PyBytes_FromStringAndSize(b->p ? b->p : "", (Py_ssize_t)b->len); }

/* ------------------------------------------------------------------ interning */

static inline uint64_t mum(uint64_t a, uint64_t b) {
    unsigned __int128 r = (unsigned __int128)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

/* wyhash-like: two independent lanes of 16 bytes per step keep the multiplier busy. */
static inline uint64_t hash_bytes(const char *s, size_t n) {
    const uint64_t k0 = 0xa0761d6478bd642full, k1 = 0xe7037ed1a0b428dbull, k2 = 0x8ebc6af09c88c6e3ull,
                   k3 = 0x589965cc75374cc3ull;
    uint64_t a = k0 ^ n, b = k1 ^ (n << 7);
    while (n >= 32) {
        uint64_t v0, v1, v2, v3;
        memcpy(&v0, s, 8);
        memcpy(&v1, s + 8, 8);
        memcpy(&v2, s + 16, 8);
        memcpy(&v3, s + 24, 8);
        a = mum(v0 ^ k2, v1 ^ a);
        b = mum(v2 ^ k3, v3 ^ b);
        s += 32;
        n -= 32;
    }
    while (n >= 16) {
        uint64_t v0, v1;
        memcpy(&v0, s, 8);
        memcpy(&v1, s + 8, 8);
        a = mum(v0 ^ k2, v1 ^ a);
        s += 16;
        n -= 16;
    }
    uint64_t v0 = 0, v1 = 0;
    if (n > 8) {
        memcpy(&v0, s, 8);
        memcpy(&v1, s + 8, n - 8);
    } else if (n) {
        memcpy(&v0, s, n);
    }
    b = mum(v0 ^ k1 ^ b, v1 ^ k3);
    return mum(a ^ k0, b ^ k2);
}

typedef struct {
    uint32_t *slots; /* id + 1, 0 = empty */
    size_t nslots;
    uint64_t *hashes; /* per id */
    size_t *off;      /* per id, into arena */
    size_t *len;
    size_t count, idcap;
    Buf arena;
    uint32_t recent[256]; /* id + 1 by a cheap fingerprint: repeats skip the full hash */
} Intern;

static void intern_free(Intern *t) {
    PyMem_Free(t->slots);
    PyMem_Free(t->hashes);
    PyMem_Free(t->off);
    PyMem_Free(t->len);
    buf_free(&t->arena);
    memset(t, 0, sizeof(*t));
}

static int intern_grow(Intern *t) {
    size_t n = t->nslots ? t->nslots * 2 : 1024;
    uint32_t *slots = PyMem_Calloc(n, sizeof(uint32_t));
    if (!slots) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < t->count; i++) {
        size_t j = t->hashes[i] & (n - 1);
        while (slots[j]) j = (j + 1) & (n - 1);
        slots[j] = (uint32_t)(i + 1);
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->nslots = n;
    return 0;
}

/* Id of s[0:n]; *is_new set when it was added. Returns -1 with an exception on memory failure. */
static int64_t intern(Intern *t, const char *s, size_t n, int *is_new) {
    /* A fingerprint of the length and the first and last 8 bytes picks a recently seen id; a full compare
     * decides, so a wrong pick only costs that compare. */
    uint64_t a = 0, b = 0;
    if (n >= 8) {
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
    } else if (n) {
        memcpy(&a, s, n);
    }
    uint64_t fp = (a ^ (b * 0x9E3779B97F4A7C15ull) ^ n) * 0xff51afd7ed558ccdull;
    uint32_t *slot = &t->recent[fp >> 56];
    if (*slot) {
        size_t id = *slot - 1;
        if (t->len[id] == n && memcmp(t->arena.p + t->off[id], s, n) == 0) {
            *is_new = 0;
            return (int64_t)id;
        }
    }
    if (UNLIKELY((t->count + 1) * 2 > t->nslots) && intern_grow(t)) return -1;
    uint64_t h = hash_bytes(s, n);
    size_t mask = t->nslots - 1, j = h & mask;
    for (;;) {
        uint32_t id = t->slots[j];
        if (!id) break;
        id--;
        if (t->hashes[id] == h && t->len[id] == n && memcmp(t->arena.p + t->off[id], s, n) == 0) {
            *is_new = 0;
            *slot = id + 1;
            return id;
        }
        j = (j + 1) & mask;
    }
    if (t->count == t->idcap) {
        size_t cap = t->idcap ? t->idcap * 2 : 256;
        uint64_t *hs = PyMem_Realloc(t->hashes, cap * sizeof(uint64_t));
        if (!hs) goto nomem;
        t->hashes = hs;
        size_t *off = PyMem_Realloc(t->off, cap * sizeof(size_t));
        if (!off) goto nomem;
        t->off = off;
        size_t *ln = PyMem_Realloc(t->len, cap * sizeof(size_t));
        if (!ln) goto nomem;
        t->len = ln;
        t->idcap = cap;
    }
    size_t id = t->count++;
    t->hashes[id] = h;
    t->off[id] = t->arena.len;
    t->len[id] = n;
    if (buf_put(&t->arena, s, n)) return -1;
    t->slots[j] = (uint32_t)(id + 1);
    *slot = (uint32_t)(id + 1);
    *is_new = 1;
    return (int64_t)id;
nomem:
    PyErr_NoMemory();
    return -1;
}

/* ------------------------------------------------------------------ scanner state */

typedef struct {
    const char *s; /* raw text between the quotes */
    size_t n;
    PyObject *str; /* decoded */
    int is_x, is_m;
    int64_t count;
} PhEntry;

typedef struct {
    const char *s;
    size_t n;
    PyObject *str;
    int kind; /* -1: not kept */
    int64_t n_all, n_other, n_kept, first_kept;
    int last_tpl; /* template of this category's last kept event, or -1 */
} CatEntry;

/* What the walk of a kept event's args object notes for keep_event: the instance members to cut from the
 * dedup key (from the key's opening quote to the next member's key, the last one to its value's end), the
 * correlation value, and whether a member asks for the typed decode. */
typedef struct {
    const char *s, *e;   /* cut from the key */
    const char *vs, *ve; /* the member's value */
} Span;

/* The args text of an earlier kept event whose instance members all hold integers, with those values as
 * holes. An args object that equals it byte for byte outside the holes, with an integer token in each hole,
 * is valid JSON (the template was validated; one integer token replaces another) and has the template's
 * dedup key, typed flag and members: it needs no walk and no key of its own. */
#define TPL_HOLES 8
#define TPL_N 16
#define TPL_MAX_BYTES 4096
typedef struct {
    char *text;
    size_t len;
    int nholes, corr_hole;
    uint32_t hs[TPL_HOLES], he[TPL_HOLES];
    int32_t key;
    uint8_t typed;
    int8_t next; /* the template that matched the next event of the same category last time, or -1 */
} Tpl;

typedef struct {
    int64_t pid, tid;
    int32_t fl, id; /* id + 1, 0 = empty */
} PairSlot;

typedef struct {
    const char *base, *end;
    const char *why; /* reason when giving up */
    PyObject *cat_kind;
    /* columns of kept events */
    size_t n, cap;
    uint8_t *kind, *flags;
    int32_t *name, *key, *pair;
    int64_t *pid, *tid, *ts, *dur, *corr, *as, *ae;
    Intern names, keys, texts, pairs; /* pairs: (pid, tid, text bits) of kept events */
    PairSlot pair_cache[16];
    PyObject *name_list, *text_list;
    Buf key_first; /* per key id: args span of its first event */
    Buf scratch;   /* key being built; decoded strings */
    Buf slow_ts, slow_dur; /* (event, start, end) */
    Buf meta_spans;        /* (start, end) of ph "M" events */
    Buf pieces;            /* (kept end, bytes done, names, keys) */
    PhEntry ph[64];
    int nph;
    CatEntry *cats;
    int ncats, catcap;
    int last_cat, x_ph;
    int cat_cache[64]; /* cat index + 1 by find_cat's slot */
    const char *cur_ev;
    Span strip[MAX_ARGS_MEMBERS];
    int nmembers, nstrip, strip_open, kesc, ncorr, typed;
    const char *corr_s, *corr_e;
    Tpl tpl[TPL_N];
    int ntpl, tpl_next, tpl_hit; /* tpl_hit: template the current event's args matched, or -1 */
    int64_t tpl_corr;
    uint8_t tpl_hint[256]; /* template index + 1 that last matched, by a name fingerprint */
} Scan;

#define GIVE_UP(sc, reason)      \
    do {                         \
        (sc)->why = (reason);    \
        return NULL;             \
    } while (0)

static const uint8_t IS_WS[256] = {[' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1};

static inline uint64_t load64(const char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline const char *ws(const char *p) {
    /* Kineto writes one space after ':' and ',' and indents events: test that space before looping */
    if (*p == ' ') p++;
    if (LIKELY((uint8_t)*p > ' ')) return p; /* every JSON whitespace byte is <= ' ' */
    while (IS_WS[(uint8_t)*p]) p++;
    return p;
}

static inline int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static inline int hex4(const char *p, const char *end) {
    if (end - p < 4) return -1;
    int a = hexval(p[0]), b = hexval(p[1]), c = hexval(p[2]), d = hexval(p[3]);
    if ((a | b | c | d) < 0) return -1;
    return (a << 12) | (b << 8) | (c << 4) | d;
}

/* One UTF-8 sequence at p (first byte >= 0x80), strict like Python's decoder; returns its length or 0. */
static inline int utf8_seq(const uint8_t *p, const uint8_t *end) {
    uint8_t c = p[0];
    if (c >= 0xC2 && c <= 0xDF) {
        return (end - p >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (end - p < 3) return 0;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
        return (p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80) ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (end - p < 4) return 0;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
        return (p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 && (p[3] & 0xC0) == 0x80) ? 4 : 0;
    }
    return 0;
}

#define S_ESC 1
#define S_HIGH 2

/* p: just after an opening quote. Returns the closing quote, or NULL (invalid, truncated, lone surrogate).
 * *fl gets S_ESC when the text holds escapes and S_HIGH when it holds non-ASCII bytes. */
static inline __attribute__((always_inline)) const char *scan_str(const char *p, const char *end, int *fl) {
    for (;;) {
#if defined(__SSE2__)
        const __m128i q = _mm_set1_epi8('"'), bs = _mm_set1_epi8('\\'), sp = _mm_set1_epi8(0x20);
        while (end - p >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)p);
            /* signed compare: control bytes and every byte >= 0x80 are "less than space" */
            __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, q), _mm_cmpeq_epi8(v, bs)),
                                     _mm_cmplt_epi8(v, sp));
            int mask = _mm_movemask_epi8(m);
            if (mask) {
                p += __builtin_ctz((unsigned)mask);
                goto special;
            }
            p += 16;
        }
#endif
        while ((uint8_t)*p >= 0x20 && (uint8_t)*p < 0x80 && *p != '"' && *p != '\\') p++;
#if defined(__SSE2__)
    special:
#endif
        {
            uint8_t c = (uint8_t)*p;
            if (c == '"') return p < end ? p : NULL;
            if (c == '\\') {
                *fl |= S_ESC;
                char e = p[1];
                if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') {
                    p += 2;
                    continue;
                }
                if (e != 'u') return NULL;
                int u = hex4(p + 2, end);
                if (u < 0) return NULL;
                if (u >= 0xD800 && u <= 0xDBFF) {
                    if (end - p < 12 || p[6] != '\\' || p[7] != 'u') return NULL;
                    int lo = hex4(p + 8, end);
                    if (lo < 0xDC00 || lo > 0xDFFF) return NULL;
                    p += 12;
                    continue;
                }
                if (u >= 0xDC00 && u <= 0xDFFF) return NULL;
                p += 6;
                continue;
            }
            if (c >= 0x80) {
                int k = utf8_seq((const uint8_t *)p, (const uint8_t *)end);
                if (!k) return NULL;
                *fl |= S_HIGH;
                p += k;
                continue;
            }
            return NULL; /* a control byte, or the end of the buffer */
        }
    }
}

/* Decode the (validated) text of a JSON string into a Python str. */
static PyObject *decode_str(Scan *sc, const char *s, size_t n, int fl) {
    if (!(fl & S_ESC)) return PyUnicode_DecodeUTF8(s, (Py_ssize_t)n, "strict");
    sc->scratch.len = 0;
    if (buf_reserve(&sc->scratch, n + 4)) return NULL;
    char *o = sc->scratch.p;
    const char *p = s, *e = s + n;
    while (p < e) {
        if (*p != '\\') {
            *o++ = *p++;
            continue;
        }
        char c = p[1];
        p += 2;
        switch (c) {
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            uint32_t u = (uint32_t)hex4(p, e);
            p += 4;
            if (u >= 0xD800 && u <= 0xDBFF) {
                uint32_t lo = (uint32_t)hex4(p + 2, e);
                p += 6;
                u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (u < 0x80) {
                *o++ = (char)u;
            } else if (u < 0x800) {
                *o++ = (char)(0xC0 | (u >> 6));
                *o++ = (char)(0x80 | (u & 0x3F));
            } else if (u < 0x10000) {
                *o++ = (char)(0xE0 | (u >> 12));
                *o++ = (char)(0x80 | ((u >> 6) & 0x3F));
                *o++ = (char)(0x80 | (u & 0x3F));
            } else {
                *o++ = (char)(0xF0 | (u >> 18));
                *o++ = (char)(0x80 | ((u >> 12) & 0x3F));
                *o++ = (char)(0x80 | ((u >> 6) & 0x3F));
                *o++ = (char)(0x80 | (u & 0x3F));
            }
            break;
        }
        default: *o++ = c; /* " \ / */
        }
    }
    return PyUnicode_DecodeUTF8(sc->scratch.p, (Py_ssize_t)(o - sc->scratch.p), "strict");
}

/* The end of a run of ASCII digits at p; 8 bytes at a time where 8 bytes are left before end. */
static inline __attribute__((always_inline)) const char *skip_digits(const char *p, const char *end) {
    while (LIKELY(end - p >= 8)) {
        /* x = byte ^ '0' is below 10 for a digit: then neither x nor x + 0x76 has its top bit set. A carry
         * out of a non-digit byte can only mark later bytes, and only the first non-digit counts. */
        uint64_t x = load64(p) ^ 0x3030303030303030ull;
        uint64_t bad = ((x + 0x7676767676767676ull) | x) & 0x8080808080808080ull;
        if (bad) return p + (__builtin_ctzll(bad) >> 3);
        p += 8;
    }
    while (*p >= '0' && *p <= '9') p++;
    return p;
}

/* A JSON number at p; returns its end or NULL. *is_int: no fraction, no exponent. */
static inline __attribute__((always_inline)) const char *skip_num(const char *p, const char *end, int *is_int) {
    *is_int = 1;
    if (LIKELY((unsigned)(*p - '1') < 9)) {
        p = skip_digits(p + 1, end);
    } else {
        if (*p == '-') p++;
        if (*p == '0') {
            p++;
        } else if (*p >= '1' && *p <= '9') {
            p = skip_digits(p + 1, end);
        } else {
            return NULL;
        }
    }
    if (LIKELY(*p != '.' && (*p | 0x20) != 'e')) return p;
    if (*p == '.') {
        *is_int = 0;
        p++;
        if (!(*p >= '0' && *p <= '9')) return NULL;
        p = skip_digits(p + 1, end);
    }
    if (*p == 'e' || *p == 'E') {
        *is_int = 0;
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!(*p >= '0' && *p <= '9')) return NULL;
        p = skip_digits(p + 1, end);
    }
    return p;
}

/* Integer literal s..e (validated JSON, no fraction/exponent) of at most 18 digits; 0 on success. */
static inline int parse_i64(const char *s, const char *e, int64_t *out) {
    int neg = *s == '-';
    if (neg) s++;
    if (e - s > 18) return -1;
    int64_t v = 0;
    for (; s < e; s++) v = v * 10 + (*s - '0');
    *out = neg ? -v : v;
    return 0;
}

static const char *skip_value(Scan *sc, const char *p, int depth);

static const char *skip_container(Scan *sc, const char *p, int depth, int record) {
    const char *end = sc->end;
    if (depth > MAX_DEPTH) GIVE_UP(sc, "nesting too deep");
    if (*p == '[') {
        p = ws(p + 1);
        if (*p == ']') return p + 1;
        for (;;) {
            p = skip_value(sc, p, depth + 1);
            if (!p) return NULL;
            p = ws(p);
            if (*p == ',') {
                p = ws(p + 1);
                continue;
            }
            if (*p == ']') return p + 1;
            GIVE_UP(sc, "bad array");
        }
    }
    /* object */
    p = ws(p + 1);
    if (*p == '}') return p + 1;
    for (;;) {
        if (*p != '"') GIVE_UP(sc, "bad object key");
        int fl = 0;
        const char *ks = p;
        const char *q = scan_str(p + 1, end, &fl);
        if (!q) GIVE_UP(sc, "bad string");
        const char *ke = q + 1;
        /* Kineto writes '"key": value': one test for that layout, the general walk otherwise */
        if (LIKELY(ke[0] == ':' && ke[1] == ' ' && (uint8_t)ke[2] > ' ')) {
            p = ke + 2;
        } else {
            p = ws(ke);
            if (*p != ':') GIVE_UP(sc, "bad object");
            p = ws(p + 1);
        }
        const char *vs = p;
        if ((*p >= '0' && *p <= '9') || *p == '-') {
            int is_int;
            p = skip_num(p, end, &is_int);
            if (!p) GIVE_UP(sc, "bad number");
        } else if (*p == '"') {
            int vfl = 0;
            q = scan_str(p + 1, end, &vfl);
            if (!q) GIVE_UP(sc, "bad string");
            p = q + 1;
        } else if (*p == '[') {
            /* arrays of numbers ("grid": [132, 1, 1]) without a call per element */
            if (depth + 1 > MAX_DEPTH) GIVE_UP(sc, "nesting too deep");
            p = ws(p + 1);
            if (*p == ']') {
                p++;
            } else {
                for (;;) {
                    if ((*p >= '0' && *p <= '9') || *p == '-') {
                        int is_int;
                        p = skip_num(p, end, &is_int);
                        if (!p) GIVE_UP(sc, "bad number");
                    } else {
                        p = skip_value(sc, p, depth + 2);
                        if (!p) return NULL;
                    }
                    if (*p == ',') {
                        p = ws(p + 1);
                        continue;
                    }
                    p = ws(p);
                    if (*p == ',') {
                        p = ws(p + 1);
                        continue;
                    }
                    if (*p == ']') break;
                    GIVE_UP(sc, "bad array");
                }
                p++;
            }
        } else {
            p = skip_value(sc, p, depth + 1);
            if (!p) return NULL;
        }
        if (record) {
            sc->nmembers++;
            if (sc->strip_open) {
                sc->strip[sc->nstrip - 1].e = ks;
                sc->strip_open = 0;
            }
            sc->kesc |= fl & S_ESC;
            int strip = 0;
            switch (ke - ks) {
            case 5:
                if (memcmp(ks, "\"Seq\"", 5) == 0) strip = 1, sc->typed = 1;
                break;
            case 8:
                strip = memcmp(ks, "\"device\"", 8) == 0 || memcmp(ks, "\"stream\"", 8) == 0 ||
                        memcmp(ks, "\"Ev Idx\"", 8) == 0;
                break;
            case 13:
                if (memcmp(ks, "\"External id\"", 13) == 0) {
                    strip = 1;
                } else if (memcmp(ks, "\"correlation\"", 13) == 0) {
                    strip = 1;
                    sc->ncorr++;
                    sc->corr_s = vs;
                    sc->corr_e = p;
                }
                break;
            case 17:
                if (memcmp(ks, "\"Collective name\"", 17) == 0) sc->typed = 1;
                break;
            }
            if (strip && sc->nstrip < MAX_ARGS_MEMBERS) {
                sc->strip[sc->nstrip].s = ks;
                sc->strip[sc->nstrip].e = p;
                sc->strip[sc->nstrip].vs = vs;
                sc->strip[sc->nstrip].ve = p;
                sc->nstrip++;
                sc->strip_open = 1;
            }
        }
        if (*p == ',') {
            p = ws(p + 1);
            continue;
        }
        p = ws(p);
        if (*p == ',') {
            p = ws(p + 1);
            continue;
        }
        if (*p == '}') return p + 1;
        GIVE_UP(sc, "bad object");
    }
}

static const char *skip_value(Scan *sc, const char *p, int depth) {
    int fl = 0, is_int;
    switch (*p) {
    case '"': {
        const char *q = scan_str(p + 1, sc->end, &fl);
        if (!q) GIVE_UP(sc, "bad string");
        return q + 1;
    }
    case '{':
    case '[': return skip_container(sc, p, depth, 0);
    case 't':
        if (sc->end - p >= 4 && memcmp(p, "true", 4) == 0) return p + 4;
        GIVE_UP(sc, "bad literal");
    case 'f':
        if (sc->end - p >= 5 && memcmp(p, "false", 5) == 0) return p + 5;
        GIVE_UP(sc, "bad literal");
    case 'n':
        if (sc->end - p >= 4 && memcmp(p, "null", 4) == 0) return p + 4;
        GIVE_UP(sc, "bad literal");
    default: {
        const char *q = skip_num(p, sc->end, &is_int);
        if (!q) GIVE_UP(sc, "bad value");
        return q;
    }
    }
}

/* The value of 8 ASCII digits at s (first digit most significant): three multiply-and-fold steps. */
HOT_INLINE uint64_t digits8(uint64_t w) {
    w -= 0x3030303030303030ull;
    w = (w * 10 + (w >> 8)) & 0x00FF00FF00FF00FFull;
    w = (w * 100 + (w >> 16)) & 0x0000FFFF0000FFFFull;
    return (w * 10000 + (w >> 32)) & 0xFFFFFFFFull;
}

/* The value of the n <= 16 digits at s; 16 bytes at s must be readable (digits or not past the n). */
HOT_INLINE uint64_t digits16(const char *s, ptrdiff_t n) {
    uint64_t a = load64(s), b = load64(s + 8);
    if (n == 8) return digits8(a);
    if (n < 8) return n ? digits8(a << (8 * (8 - n)) | (0x3030303030303030ull >> (8 * n))) : 0;
    if (n == 16) return digits8(a) * 100000000ull + digits8(b);
    static const uint64_t P10[8] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000};
    ptrdiff_t k = n - 8;
    return digits8(a) * P10[k] + digits8(b << (8 * (8 - k)) | (0x3030303030303030ull >> (8 * k)));
}

/* Exact µs text -> ns for plain non-negative decimals, like timeparse's fast path; 0 when it is not one.
 * lim: the end of the readable buffer (the digit loads read 16 bytes). */
HOT_INLINE int fast_us(const char *s, const char *e, const char *lim, int64_t *out) {
    /* "%.3f" without a scan: a validated JSON number whose 4th last byte is '.' and that starts with a digit
     * has digits before that point (a number holds one '.', an exponent comes after it) and three after. */
    if (e - s >= 5 && e[-4] == '.' && (unsigned)(*s - '0') < 10 && (unsigned)(e[-3] - '0') < 10 &&
        (unsigned)(e[-2] - '0') < 10 && (unsigned)(e[-1] - '0') < 10 && lim - s >= 16) {
        ptrdiff_t n = e - 4 - s;
        if (n > 16 || (n == 16 && *s > '8')) return 0;
        *out = (int64_t)digits16(s, n) * 1000 + (e[-3] - '0') * 100 + (e[-2] - '0') * 10 + (e[-1] - '0');
        return 1;
    }
    const char *p = skip_digits(s, lim);
    if (p > e) p = e; /* a number token is never followed by a digit; this only guards */
    ptrdiff_t nint = p - s;
    if (nint == 0 || nint > 16 || (nint == 16 && *s > '8')) return 0;
    int64_t v;
    if (LIKELY(lim - s >= 16)) {
        v = (int64_t)digits16(s, nint);
    } else {
        v = 0;
        for (const char *c = s; c < p; c++) v = v * 10 + (*c - '0');
    }
    int64_t frac = 0;
    int k = 0;
    if (e - p == 4 && *p == '.' && (unsigned)(p[1] - '0') < 10 && (unsigned)(p[2] - '0') < 10 &&
        (unsigned)(p[3] - '0') < 10) { /* Kineto's "%.3f" */
        frac = (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
    } else if (p < e) {
        if (*p != '.') return 0;
        p++;
        for (; p < e && k < 3; k++, p++) {
            if (*p < '0' || *p > '9') return 0;
            frac = frac * 10 + (*p - '0');
        }
        for (int j = k; j < 3; j++) frac *= 10;
        if (p < e) {
            if (*p < '0' || *p > '9') return 0;
            int up = *p >= '5'; /* half up on the 4th decimal; later digits cannot change that */
            for (p++; p < e; p++)
                if (*p < '0' || *p > '9') return 0;
            frac += up;
        }
    }
    *out = v * 1000 + frac;
    return 1;
}

/* ------------------------------------------------------------------ tables */

static inline int same_text(const char *a, const char *b, size_t n, size_t m) {
    if (n != m) return 0;
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

static int find_ph(Scan *sc, const char *s, size_t n, int fl) {
    for (int i = 0; i < sc->nph; i++)
        if (sc->ph[i].n == n && memcmp(sc->ph[i].s, s, n) == 0) return i;
    if (sc->nph == 64) {
        sc->why = "too many distinct ph values";
        return -2;
    }
    PyObject *str = decode_str(sc, s, n, fl);
    if (!str) return -1;
    PhEntry *e = &sc->ph[sc->nph];
    e->s = s;
    e->n = n;
    e->str = str;
    e->is_x = PyUnicode_CompareWithASCIIString(str, "X") == 0;
    e->is_m = PyUnicode_CompareWithASCIIString(str, "M") == 0;
    e->count = 0;
    return sc->nph++;
}

static int find_cat(Scan *sc, const char *s, size_t n, int fl) {
    /* categories alternate (runtime call, kernel, ...): a slot by length and end bytes finds most of them */
    unsigned h = n ? ((unsigned)n * 31u + (uint8_t)s[0] * 7u + (uint8_t)s[n - 1]) & 63u : 0;
    int hit = sc->cat_cache[h] - 1;
    if (hit >= 0 && sc->cats[hit].n == n && memcmp(sc->cats[hit].s, s, n) == 0) return hit;
    for (int i = 0; i < sc->ncats; i++)
        if (same_text(sc->cats[i].s, s, n, sc->cats[i].n)) {
            sc->cat_cache[h] = i + 1;
            return i;
        }
    if (sc->ncats == sc->catcap) {
        int cap = sc->catcap ? sc->catcap * 2 : 32;
        if (cap > 4096) {
            sc->why = "too many distinct categories";
            return -2;
        }
        CatEntry *c = PyMem_Realloc(sc->cats, (size_t)cap * sizeof(CatEntry));
        if (!c) {
            PyErr_NoMemory();
            return -1;
        }
        sc->cats = c;
        sc->catcap = cap;
    }
    PyObject *str = decode_str(sc, s, n, fl);
    if (!str) return -1;
    int kind = -1;
    PyObject *k = PyDict_GetItemWithError(sc->cat_kind, str);
    if (k) {
        long v = PyLong_AsLong(k);
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(str);
            return -1;
        }
        kind = (int)v;
    } else if (PyErr_Occurred()) {
        Py_DECREF(str);
        return -1;
    }
    CatEntry *e = &sc->cats[sc->ncats];
    e->s = s;
    e->n = n;
    e->str = str;
    e->kind = kind;
    e->n_all = e->n_other = e->n_kept = 0;
    e->first_kept = -1;
    e->last_tpl = -1;
    sc->cat_cache[h] = sc->ncats + 1;
    return sc->ncats++;
}

static int grow_cols(Scan *sc) {
    size_t cap = sc->cap ? sc->cap * 2 : 65536;
#define GROW(f, T)                                                   \
    do {                                                             \
        T *q = PyMem_Realloc(sc->f, cap * sizeof(T));                \
        if (!q) {                                                    \
            PyErr_NoMemory();                                        \
            return -1;                                               \
        }                                                            \
        sc->f = q;                                                   \
    } while (0)
    GROW(kind, uint8_t);
    GROW(flags, uint8_t);
    GROW(name, int32_t);
    GROW(key, int32_t);
    GROW(pair, int32_t);
    GROW(pid, int64_t);
    GROW(tid, int64_t);
    GROW(ts, int64_t);
    GROW(dur, int64_t);
    GROW(corr, int64_t);
    GROW(as, int64_t);
    GROW(ae, int64_t);
#undef GROW
    sc->cap = cap;
    return 0;
}

/* pid/tid value of a kept event -> column value. Text pids follow the Python reader, which gives a piece's
 * pid (or tid) list to np.fromiter (int() of each text) and, when any text is not an int, maps every text to
 * its trailing number or a text id instead. Texts where both agree are resolved here: " 12 " (digits and
 * spaces), and texts with a character int() never takes ("GPU 1", "Spans": text ids are left to Python,
 * flagged). Others ("-5", "1_000", non-ASCII) give up. Returns 0, -1 (Python error) or -2 (give up). */
static int id_value(Scan *sc, const char *vs, const char *ve, int is_str, int fl, int64_t *out, int *text) {
    *text = 0;
    if (!is_str) {
        if (LIKELY(ve - vs <= 4 && *vs != '-')) { /* pid 4000, tid 7 */
            int64_t v = 0;
            for (const char *c = vs; c < ve; c++) v = v * 10 + (*c - '0');
            *out = v;
            return 0;
        }
        return parse_i64(vs, ve, out) == 0 ? 0 : (sc->why = "pid/tid out of range", -2);
    }
    const char *s = vs + 1, *e = ve - 1;
    if (fl) {
        sc->why = "pid/tid text with escapes or non-ASCII";
        return -2;
    }
    int other = 0; /* a byte int() never accepts */
    for (const char *c = s; c < e; c++)
        if (!((*c >= '0' && *c <= '9') || *c == ' ' || *c == '_' || *c == '+' || *c == '-')) other = 1;
    const char *t = e;
    while (t > s && t[-1] == ' ') t--;
    const char *d = t;
    while (d > s && d[-1] >= '0' && d[-1] <= '9') d--;
    if (!other) {
        const char *h = s;
        while (h < d && *h == ' ') h++;
        if (h != d || d == t) {
            sc->why = "pid/tid text that int() reads differently";
            return -2;
        }
    }
    if (d < t) { /* "GPU 1", "stream 7 ", " 12": the trailing number is the id */
        if (parse_i64(d, t, out)) {
            sc->why = "pid/tid text number too long";
            return -2;
        }
        return 0;
    }
    int is_new;
    int64_t id = intern(&sc->texts, s, (size_t)(e - s), &is_new);
    if (id < 0) return -1;
    if (is_new) {
        PyObject *str = PyUnicode_DecodeUTF8(s, e - s, "strict");
        if (!str) return -1;
        int r = PyList_Append(sc->text_list, str);
        Py_DECREF(str);
        if (r) return -1;
    }
    *out = id;
    *text = 1;
    return 0;
}

/* ------------------------------------------------------------------ events */

/* A pid/tid written as a plain integer of 1 to 4 digits (validated JSON): its value, without a call. */
static inline int small_id(const char *s, const char *e, int64_t *out) {
    ptrdiff_t n = e - s;
    if (n > 4 || (unsigned)(*s - '0') >= 10) return 0;
    int64_t v = 0;
    for (; s < e; s++) v = v * 10 + (*s - '0');
    *out = v;
    return 1;
}

typedef struct {
    const char *s, *e; /* value span */
    int fl;            /* string flags */
} Field;

#define HAS(k) (present & (1u << (k)))

enum { K_PH, K_CAT, K_NAME, K_PID, K_TID, K_TS, K_DUR, K_ARGS, K_N };

static inline int event_key(const char *k, size_t n) {
    switch (n) {
    case 2:
        if (k[0] == 'p' && k[1] == 'h') return K_PH;
        if (k[0] == 't' && k[1] == 's') return K_TS;
        return -1;
    case 3:
        if (memcmp(k, "cat", 3) == 0) return K_CAT;
        if (memcmp(k, "pid", 3) == 0) return K_PID;
        if (memcmp(k, "tid", 3) == 0) return K_TID;
        if (memcmp(k, "dur", 3) == 0) return K_DUR;
        return -1;
    case 4:
        if (memcmp(k, "name", 4) == 0) return K_NAME;
        if (memcmp(k, "args", 4) == 0) return K_ARGS;
        return -1;
    }
    return -1;
}

static int tpl_add(Scan *sc, const char *as, const char *ae, int32_t key, uint8_t typed, const Field *f,
                   unsigned present);

/* The kept-event part: columns, interning, args key. Returns 0, -1 (Python error) or -2 (give up). */
HOT_INLINE int keep_event(Scan *sc, const Field *f, unsigned present, CatEntry *cat) {
    if (sc->n == sc->cap && grow_cols(sc)) return -1;
    size_t i = sc->n;
    uint8_t flags = 0;
    int is_new;
    /* name */
    const char *ns = "", *ne = ns;
    int nfl = 0;
    if (HAS(K_NAME)) {
        ns = f[K_NAME].s + 1;
        ne = f[K_NAME].e - 1;
        nfl = f[K_NAME].fl;
    }
    int64_t nid = intern(&sc->names, ns, (size_t)(ne - ns), &is_new);
    if (nid < 0) return -1;
    if (is_new) {
        PyObject *str = decode_str(sc, ns, (size_t)(ne - ns), nfl);
        if (!str) return -1;
        int r = PyList_Append(sc->name_list, str);
        Py_DECREF(str);
        if (r) return -1;
    }
    /* pid, tid */
    int64_t pid = -1, tid = -1;
    int text, r;
    if (HAS(K_PID) && LIKELY(small_id(f[K_PID].s, f[K_PID].e, &pid))) {
    } else if (HAS(K_PID)) {
        r = id_value(sc, f[K_PID].s, f[K_PID].e, *f[K_PID].s == '"', f[K_PID].fl, &pid, &text);
        if (r) return r;
        if (text) flags |= F_PID_TEXT;
    }
    if (HAS(K_TID) && LIKELY(small_id(f[K_TID].s, f[K_TID].e, &tid))) {
    } else if (HAS(K_TID)) {
        r = id_value(sc, f[K_TID].s, f[K_TID].e, *f[K_TID].s == '"', f[K_TID].fl, &tid, &text);
        if (r) return r;
        if (text) flags |= F_TID_TEXT;
    }
    /* ts, dur: exact fast path, else the text goes to Python's timeparse */
    int64_t ts = 0, dur = 0;
    if (HAS(K_TS) && !fast_us(f[K_TS].s, f[K_TS].e, sc->end, &ts)) {
        flags |= F_TS_SLOW;
        if (buf_i64(&sc->slow_ts, (int64_t)i) || buf_i64(&sc->slow_ts, f[K_TS].s - sc->base) ||
            buf_i64(&sc->slow_ts, f[K_TS].e - sc->base))
            return -1;
    }
    if (HAS(K_DUR) && !fast_us(f[K_DUR].s, f[K_DUR].e, sc->end, &dur)) {
        flags |= F_DUR_SLOW;
        if (buf_i64(&sc->slow_dur, (int64_t)i) || buf_i64(&sc->slow_dur, f[K_DUR].s - sc->base) ||
            buf_i64(&sc->slow_dur, f[K_DUR].e - sc->base))
            return -1;
    }
    /* args: the dedup key is the members minus the per-instance ids (which the interned text drops too) */
    int64_t corr = NO_ID;
    int64_t as = 0, ae = 0;
    Buf *kb = &sc->scratch;
    kb->len = 0;
    if (!HAS(K_ARGS)) {
        flags |= F_NO_ARGS;
    } else {
        if (*f[K_ARGS].s != '{') {
            sc->why = "args is not an object";
            return -2;
        }
    }
    int64_t kid;
    int cur = sc->tpl_hit; /* the template of this event's args, for the next event's first guess */
    if (HAS(K_ARGS) && sc->tpl_hit >= 0) {
        const Tpl *t = &sc->tpl[sc->tpl_hit];
        if (t->typed) flags |= F_TYPED;
        corr = sc->tpl_corr;
        as = f[K_ARGS].s - sc->base;
        ae = f[K_ARGS].e - sc->base;
        kid = t->key;
    } else {
    if (HAS(K_ARGS)) {
        if (sc->nmembers > MAX_ARGS_MEMBERS) {
            sc->why = "args with too many members";
            return -2;
        }
        if (sc->kesc) {
            sc->why = "args key with escapes";
            return -2;
        }
        if (sc->ncorr > 1) {
            sc->why = "correlation twice";
            return -2;
        }
        if (sc->typed) flags |= F_TYPED;
        if (sc->ncorr) {
            const char *vs = sc->corr_s;
            if (*vs == '-' || (*vs >= '0' && *vs <= '9')) {
                int is_int;
                skip_num(vs, sc->end, &is_int);
                if (!is_int) {
                    corr = NO_ID;
                } else if (parse_i64(vs, sc->corr_e, &corr)) {
                    sc->why = "correlation out of range";
                    return -2;
                }
            }
        }
        as = f[K_ARGS].s - sc->base;
        ae = f[K_ARGS].e - sc->base;
        if (buf_reserve(kb, (size_t)(ae - as))) return -1; /* the key is a subsequence of the args text */
        /* The key is the args text with each instance member cut out from its key to the next member's key
         * (the last one: to its value's end). JSON tokens delimit themselves, so the key still names the
         * remaining members and their raw values one to one. */
        const char *cursor = f[K_ARGS].s;
        for (int j = 0; j < sc->nstrip; j++) {
            memcpy(kb->p + kb->len, cursor, (size_t)(sc->strip[j].s - cursor));
            kb->len += (size_t)(sc->strip[j].s - cursor);
            cursor = sc->strip[j].e;
        }
        memcpy(kb->p + kb->len, cursor, (size_t)(f[K_ARGS].e - cursor));
        kb->len += (size_t)(f[K_ARGS].e - cursor);
    }
    kid = intern(&sc->keys, kb->p ? kb->p : "", kb->len, &is_new);
    if (kid < 0) return -1;
    if (is_new && (buf_i64(&sc->key_first, as) || buf_i64(&sc->key_first, ae))) return -1;
    if (HAS(K_ARGS)) {
        for (int j = 0; j < sc->ntpl && cur < 0; j++)
            if (sc->tpl[j].key == (int32_t)kid) cur = j;
        if (cur < 0) {
            cur = tpl_add(sc, f[K_ARGS].s, f[K_ARGS].e, (int32_t)kid, (uint8_t)sc->typed, f, present);
            if (cur == -2) return -1;
        }
    }
    }
    if (cat->last_tpl >= 0 && cur >= 0) sc->tpl[cat->last_tpl].next = (int8_t)cur;
    cat->last_tpl = cur;
    if (cat->first_kept < 0) cat->first_kept = (int64_t)i;
    cat->n_kept++;
    sc->kind[i] = (uint8_t)cat->kind;
    sc->flags[i] = flags;
    sc->name[i] = (int32_t)nid;
    sc->key[i] = (int32_t)kid;
    {
        /* one small id per (pid, tid) column pair: the reader finds an event's track from it */
        int tfl = flags & (F_PID_TEXT | F_TID_TEXT);
        unsigned slot = (unsigned)(((uint64_t)pid * 0x9E3779B97F4A7C15ull ^ (uint64_t)tid) * 0xff51afd7ed558ccdull >> 60);
        PairSlot *ps = &sc->pair_cache[slot];
        if (ps->id && ps->pid == pid && ps->tid == tid && ps->fl == tfl) {
            sc->pair[i] = ps->id - 1;
        } else {
            char pk[17];
            memcpy(pk, &pid, 8);
            memcpy(pk + 8, &tid, 8);
            pk[16] = (char)tfl;
            int64_t pair = intern(&sc->pairs, pk, sizeof(pk), &is_new);
            if (pair < 0) return -1;
            sc->pair[i] = (int32_t)pair;
            ps->pid = pid;
            ps->tid = tid;
            ps->fl = tfl;
            ps->id = (int32_t)pair + 1;
        }
    }
    sc->pid[i] = pid;
    sc->tid[i] = tid;
    sc->ts[i] = ts;
    sc->dur[i] = dur;
    sc->corr[i] = corr;
    sc->as[i] = as;
    sc->ae[i] = ae;
    sc->n = i + 1;
    return 0;
}

/* p[0:n] == lit[0:n] for n <= 8, given 8 readable bytes at p; lit folds to a constant. */
static inline int eq_lit(uint64_t w, const char *lit, int n) {
    uint64_t v = 0;
    memcpy(&v, lit, (size_t)n);
    uint64_t mask = n == 8 ? ~0ull : ((1ull << (8 * n)) - 1);
    return ((w ^ v) & mask) == 0;
}

/* Known event keys by their quoted text (the closing quote proves the key ends there). */
HOT_INLINE int fast_key(const char *p, const char *end, const char **q) {
    if (end - p < 8) return -2;
    uint64_t w = load64(p);
    switch (p[1]) {
    case 'p':
        if (eq_lit(w, "\"ph\"", 4)) return *q = p + 3, K_PH;
        if (eq_lit(w, "\"pid\"", 5)) return *q = p + 4, K_PID;
        break;
    case 'c':
        if (eq_lit(w, "\"cat\"", 5)) return *q = p + 4, K_CAT;
        break;
    case 'n':
        if (eq_lit(w, "\"name\"", 6)) return *q = p + 5, K_NAME;
        break;
    case 't':
        if (eq_lit(w, "\"ts\"", 4)) return *q = p + 3, K_TS;
        if (eq_lit(w, "\"tid\"", 5)) return *q = p + 4, K_TID;
        break;
    case 'd':
        if (eq_lit(w, "\"dur\"", 5)) return *q = p + 4, K_DUR;
        break;
    case 'a':
        if (eq_lit(w, "\"args\"", 6)) return *q = p + 5, K_ARGS;
        break;
    }
    return -2;
}

static inline int resolve_ph(Scan *sc, const Field *f, unsigned present) {
    const char *s = "";
    size_t n = 0;
    int fl = 0;
    if (HAS(K_PH)) {
        s = f[K_PH].s + 1;
        n = (size_t)(f[K_PH].e - f[K_PH].s - 2);
        fl = f[K_PH].fl;
    }
    int ph = sc->x_ph;
    if (ph >= 0 && n == 1 && *s == 'X') return ph;
    ph = find_ph(sc, s, n, fl);
    if (ph >= 0 && sc->ph[ph].is_x && n == 1 && *s == 'X') sc->x_ph = ph;
    return ph;
}

static inline int resolve_cat(Scan *sc, const Field *f, unsigned present) {
    if (!HAS(K_CAT)) return find_cat(sc, "", 0, 0);
    const char *s = f[K_CAT].s + 1;
    size_t n = (size_t)(f[K_CAT].e - f[K_CAT].s - 2);
    if (n) { /* find_cat's first look, without the call */
        int hit = sc->cat_cache[((unsigned)n * 31u + (uint8_t)s[0] * 7u + (uint8_t)s[n - 1]) & 63u] - 1;
        if (hit >= 0 && sc->cats[hit].n == n && memcmp(sc->cats[hit].s, s, n) == 0) return hit;
    }
    return find_cat(sc, s, n, f[K_CAT].fl);
}

/* The end of the args object at p when it matches template t (see Tpl), else NULL; *corr: its correlation. */
static inline const char *tpl_match(const Tpl *t, const char *p, const char *end, int64_t *corr) {
    size_t pos = 0;
    *corr = NO_ID;
    for (int h = 0; h < t->nholes; h++) {
        size_t l = t->hs[h] - pos;
        if ((size_t)(end - p) < l || memcmp(p, t->text + pos, l) != 0) return NULL;
        p += l;
        if (!((*p >= '0' && *p <= '9') || *p == '-')) return NULL;
        int is_int;
        const char *e = skip_num(p, end, &is_int);
        if (!e || !is_int) return NULL;
        if (h == t->corr_hole && parse_i64(p, e, corr)) return NULL;
        p = e;
        pos = t->he[h];
    }
    size_t l = t->len - pos;
    if ((size_t)(end - p) < l || memcmp(p, t->text + pos, l) != 0) return NULL;
    return p + l;
}

static inline unsigned name_slot(const Field *f, unsigned present) {
    if (!HAS(K_NAME)) return 0;
    const char *s = f[K_NAME].s, *e = f[K_NAME].e; /* with quotes */
    size_t n = (size_t)(e - s);
    return ((unsigned)n * 31u + (uint8_t)s[1] * 7u + (uint8_t)e[-2] * 131u) & 255u;
}

/* The args at p of an event that may be kept (category ci, or -1 when not known yet): a template's end
 * (sc->tpl_hit set) or NULL. Tries first the template that followed this category's last one last time
 * (event sequences repeat every iteration), then the one this name matched last, then the rest. */
static inline const char *tpl_args(Scan *sc, const char *p, const Field *f, unsigned present, int ci) {
    if (!sc->ntpl) return NULL;
    const char *q;
    int pred = -1;
    if (ci >= 0 && sc->cats[ci].last_tpl >= 0) {
        pred = sc->tpl[sc->cats[ci].last_tpl].next;
        if (pred >= 0 && (q = tpl_match(&sc->tpl[pred], p, sc->end, &sc->tpl_corr))) {
            sc->tpl_hit = pred;
            return q;
        }
    }
    unsigned slot = name_slot(f, present);
    int hint = sc->tpl_hint[slot] - 1;
    if (hint >= 0 && hint != pred && (q = tpl_match(&sc->tpl[hint], p, sc->end, &sc->tpl_corr))) {
        sc->tpl_hit = hint;
        return q;
    }
    for (int i = 0; i < sc->ntpl; i++) {
        if (i == hint || i == pred) continue;
        if ((q = tpl_match(&sc->tpl[i], p, sc->end, &sc->tpl_corr))) {
            sc->tpl_hit = i;
            sc->tpl_hint[slot] = (uint8_t)(i + 1);
            return q;
        }
    }
    return NULL;
}

/* After a walked kept event (sc->strip, sc->typed as the walk left them): keep its args as a template when
 * every instance member holds an integer. Returns its index, -1 when it is not kept, -2 on memory failure. */
static int tpl_add(Scan *sc, const char *as, const char *ae, int32_t key, uint8_t typed, const Field *f,
                   unsigned present) {
    size_t len = (size_t)(ae - as);
    if (len > TPL_MAX_BYTES || sc->nstrip > TPL_HOLES) return -1;
    Tpl t;
    t.nholes = sc->nstrip;
    t.corr_hole = -1;
    for (int h = 0; h < sc->nstrip; h++) {
        const Span *m = &sc->strip[h];
        int is_int;
        if (!((*m->vs >= '0' && *m->vs <= '9') || *m->vs == '-')) return -1;
        if (skip_num(m->vs, sc->end, &is_int) != m->ve || !is_int) return -1;
        t.hs[h] = (uint32_t)(m->vs - as);
        t.he[h] = (uint32_t)(m->ve - as);
        if (m->ve - m->vs > 0 && sc->ncorr && m->vs == sc->corr_s) t.corr_hole = h;
    }
    Tpl *slot;
    if (sc->ntpl < TPL_N) {
        slot = &sc->tpl[sc->ntpl++];
    } else {
        slot = &sc->tpl[sc->tpl_next];
        sc->tpl_next = (sc->tpl_next + 1) % TPL_N;
        PyMem_Free(slot->text);
        slot->text = NULL;
    }
    t.text = PyMem_Malloc(len ? len : 1);
    if (!t.text) {
        slot->len = 0;
        slot->nholes = 0;
        slot->key = -1;
        PyErr_NoMemory();
        return -2;
    }
    memcpy(t.text, as, len);
    t.len = len;
    t.key = key;
    t.typed = typed;
    t.next = -1;
    *slot = t;
    for (int j = 0; j < sc->ntpl; j++)
        if (sc->tpl[j].next == (int8_t)(slot - sc->tpl)) sc->tpl[j].next = -1; /* a replaced template */
    sc->tpl_hint[name_slot(f, present)] = (uint8_t)(slot - sc->tpl + 1);
    return (int)(slot - sc->tpl);
}

/* One event object at p ('{'); returns the byte after its '}' or NULL (error set, or sc->why). */
static const char *event(Scan *sc, const char *p) {
    const char *end = sc->end;
    Field f[K_N];
    unsigned present = 0;
    int ph = -1, ci = -1;
    sc->nmembers = sc->nstrip = sc->strip_open = sc->kesc = sc->ncorr = sc->typed = 0;
    sc->tpl_hit = -1;
    p = ws(p + 1);
    if (*p != '}') {
        for (;;) {
            if (*p != '"') GIVE_UP(sc, "bad event key");
            const char *q;
            int k = fast_key(p, end, &q);
            if (k == -2) {
                int fl = 0;
                q = scan_str(p + 1, end, &fl);
                if (!q) GIVE_UP(sc, "bad string");
                if (fl & S_ESC) GIVE_UP(sc, "event key with escapes");
                k = event_key(p + 1, (size_t)(q - p - 1));
            }
            p = q + 1;
            if (LIKELY(p[0] == ':' && p[1] == ' ' && (uint8_t)p[2] > ' ')) { /* Kineto's '"key": value' */
                p += 2;
            } else {
                if (*p != ':') {
                    p = ws(p);
                    if (*p != ':') GIVE_UP(sc, "bad event");
                }
                p = ws(p + 1);
            }
            const char *vs = p;
            int vfl = 0, is_int;
            if (k < 0) {
                p = skip_value(sc, p, 3);
                if (!p) return NULL;
            } else {
                if (present & (1u << k)) GIVE_UP(sc, "event key twice");
                switch (k) {
                case K_PH:
                case K_CAT:
                case K_NAME:
                    if (*p != '"') GIVE_UP(sc, "ph/cat/name is not a string");
                    q = scan_str(p + 1, end, &vfl);
                    if (!q) GIVE_UP(sc, "bad string");
                    p = q + 1;
                    break;
                case K_PID:
                case K_TID:
                    if (*p == '"') {
                        q = scan_str(p + 1, end, &vfl);
                        if (!q) GIVE_UP(sc, "bad string");
                        p = q + 1;
                    } else {
                        p = skip_num(p, sc->end, &is_int);
                        if (!p || !is_int) GIVE_UP(sc, "pid/tid is not an int or a string");
                        if (p - vs > 19 || (p - vs == 19 && *vs != '-')) GIVE_UP(sc, "pid/tid too long");
                    }
                    break;
                case K_ARGS:
                    if (*p == '{') {
                        /* members are needed only when the event may be kept */
                        int skip = ph >= 0 && ci >= 0 && (!sc->ph[ph].is_x || sc->cats[ci].kind < 0);
                        const char *t = skip ? NULL : tpl_args(sc, p, f, present, ci);
                        p = t ? t : skip_container(sc, p, 3, !skip);
                    } else {
                        p = skip_value(sc, p, 3);
                    }
                    if (!p) return NULL;
                    break;
                default: /* ts, dur */
                    if ((*p >= '0' && *p <= '9') || *p == '-') {
                        p = skip_num(p, end, &is_int);
                        if (!p) GIVE_UP(sc, "bad number");
                    } else {
                        p = skip_value(sc, p, 3);
                        if (!p) return NULL;
                    }
                }
                f[k].s = vs;
                f[k].e = p;
                f[k].fl = vfl;
                present |= 1u << k;
                if (k == K_PH) {
                    ph = resolve_ph(sc, f, present);
                    if (ph < 0) return NULL;
                } else if (k == K_CAT) {
                    ci = resolve_cat(sc, f, present);
                    if (ci < 0) return NULL;
                }
            }
            if (*p == ',') {
                if (LIKELY(p[1] == ' ' && p[2] == '"')) { /* Kineto's ', "' */
                    p += 2;
                    continue;
                }
                p = ws(p + 1);
                continue;
            }
            p = ws(p);
            if (*p == ',') {
                p = ws(p + 1);
                continue;
            }
            if (*p == '}') break;
            GIVE_UP(sc, "bad event");
        }
    }
    const char *after = p + 1;
    /* ph and cat as the typed decode sees them (missing: "") */
    if (ph < 0) {
        ph = resolve_ph(sc, f, present);
        if (ph < 0) return NULL;
    }
    if (ci < 0) {
        ci = resolve_cat(sc, f, present);
        if (ci < 0) return NULL;
    }
    PhEntry *pe = &sc->ph[ph];
    CatEntry *ce = &sc->cats[ci];
    pe->count++;
    ce->n_all++;
    if (!pe->is_x) {
        ce->n_other++;
        if (pe->is_m) {
            if (buf_i64(&sc->meta_spans, sc->cur_ev - sc->base) || buf_i64(&sc->meta_spans, after - sc->base))
                return NULL;
        }
        return after;
    }
    if (ce->kind < 0) return after;
    int r = keep_event(sc, f, present, ce);
    if (r) return NULL;
    return after;
}

/* True when "}\s*,\s*{" starts at some '}' in [from, to): where the Python reader's piece regex would cut. */
static int cut_pattern_in(const char *from, const char *to) {
    for (const char *p = from; p < to; p++) {
        p = memchr(p, '}', (size_t)(to - p));
        if (!p) return 0;
        const char *q = ws(p + 1);
        if (*q == ',' && *ws(q + 1) == '{') return 1;
    }
    return 0;
}

/* End of a piece: record it and report progress (on_piece may raise, e.g. Cancelled). */
static int piece(Scan *sc, int64_t done, PyObject *on_piece) {
    if (buf_i64(&sc->pieces, (int64_t)sc->n) || buf_i64(&sc->pieces, done) ||
        buf_i64(&sc->pieces, (int64_t)sc->names.count) || buf_i64(&sc->pieces, (int64_t)sc->keys.count))
        return -1;
    if (on_piece == Py_None) return 0;
    PyObject *r = PyObject_CallFunction(on_piece, "L", (long long)done);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

/* The traceEvents array at p ('['); returns the byte after ']'. */
static const char *events(Scan *sc, const char *p, int64_t piece_bytes, PyObject *on_piece) {
    const char *arr = p; /* offsets reported to on_piece count from the '[' like the Python reader's */
    const char *pstart = p + 1;
    p = ws(p + 1);
    if (*p == ']') {
        return p + 1;
    }
    for (;;) {
        if (*p != '{') GIVE_UP(sc, "traceEvents holds something that is not an object");
        sc->cur_ev = p;
        const char *q = event(sc, p);
        if (!q) return NULL;
        const char *close = q - 1; /* the event's '}' */
        p = ws(q);
        if (close - pstart >= piece_bytes) {
            const char *t = pstart + piece_bytes;
            const char *from = t > sc->cur_ev ? t : sc->cur_ev;
            if (cut_pattern_in(from, close)) GIVE_UP(sc, "a piece cut would fall inside an event");
            if (*p == ',') {
                if (piece(sc, q - arr, on_piece)) return NULL;
                pstart = p + 1;
            }
        }
        if (*p == ',') {
            p = ws(p + 1);
            continue;
        }
        if (*p == ']') break;
        GIVE_UP(sc, "bad traceEvents array");
    }
    if (piece(sc, p - arr, on_piece)) return NULL;
    return p + 1;
}

static PyObject *list_of_i64(const Buf *b) { return buf_bytes(b); }

static void scan_free(Scan *sc) {
    PyMem_Free(sc->kind);
    PyMem_Free(sc->flags);
    PyMem_Free(sc->name);
    PyMem_Free(sc->key);
    PyMem_Free(sc->pair);
    PyMem_Free(sc->pid);
    PyMem_Free(sc->tid);
    PyMem_Free(sc->ts);
    PyMem_Free(sc->dur);
    PyMem_Free(sc->corr);
    PyMem_Free(sc->as);
    PyMem_Free(sc->ae);
    intern_free(&sc->names);
    intern_free(&sc->keys);
    intern_free(&sc->texts);
    intern_free(&sc->pairs);
    Py_XDECREF(sc->name_list);
    Py_XDECREF(sc->text_list);
    buf_free(&sc->key_first);
    buf_free(&sc->scratch);
    buf_free(&sc->slow_ts);
    buf_free(&sc->slow_dur);
    buf_free(&sc->meta_spans);
    buf_free(&sc->pieces);
    for (int i = 0; i < sc->nph; i++) Py_XDECREF(sc->ph[i].str);
    for (int i = 0; i < sc->ncats; i++) Py_XDECREF(sc->cats[i].str);
    for (int i = 0; i < sc->ntpl; i++) PyMem_Free(sc->tpl[i].text);
    PyMem_Free(sc->cats);
}

static int set_item(PyObject *d, const char *k, PyObject *v) {
    if (!v) return -1;
    int r = PyDict_SetItemString(d, k, v);
    Py_DECREF(v);
    return r;
}

static PyObject *result(Scan *sc, PyObject *top) {
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    size_t n = sc->n;
#define COL(field, T) set_item(d, #field, PyByteArray_FromStringAndSize(n ? (const char *)sc->field : "", (Py_ssize_t)(n * sizeof(T))))
    if (COL(kind, uint8_t) || COL(flags, uint8_t) || COL(name, int32_t) || COL(key, int32_t) || COL(pair, int32_t) || COL(pid, int64_t) ||
        COL(tid, int64_t) || COL(ts, int64_t) || COL(dur, int64_t) || COL(corr, int64_t) || COL(as, int64_t) ||
        COL(ae, int64_t))
        goto fail;
#undef COL
    if (set_item(d, "key_first", buf_bytes(&sc->key_first)) || set_item(d, "slow_ts", buf_bytes(&sc->slow_ts)) ||
        set_item(d, "slow_dur", buf_bytes(&sc->slow_dur)) || set_item(d, "meta_spans", buf_bytes(&sc->meta_spans)) ||
        set_item(d, "pieces", list_of_i64(&sc->pieces)))
        goto fail;
    if (PyDict_SetItemString(d, "names", sc->name_list) || PyDict_SetItemString(d, "texts", sc->text_list) ||
        PyDict_SetItemString(d, "top", top))
        goto fail;
    PyObject *phs = PyList_New(0);
    if (!phs || set_item(d, "ph", phs)) goto fail;
    for (int i = 0; i < sc->nph; i++) {
        PyObject *t = Py_BuildValue("(OL)", sc->ph[i].str, (long long)sc->ph[i].count);
        if (!t || PyList_Append(phs, t)) {
            Py_XDECREF(t);
            goto fail;
        }
        Py_DECREF(t);
    }
    PyObject *cats = PyList_New(0);
    if (!cats || set_item(d, "cats", cats)) goto fail;
    for (int i = 0; i < sc->ncats; i++) {
        CatEntry *c = &sc->cats[i];
        PyObject *t = Py_BuildValue("(OLLLL)", c->str, (long long)c->n_all, (long long)c->n_other,
                                    (long long)c->n_kept, (long long)c->first_kept);
        if (!t || PyList_Append(cats, t)) {
            Py_XDECREF(t);
            goto fail;
        }
        Py_DECREF(t);
    }
    return d;
fail:
    Py_DECREF(d);
    return NULL;
}

/* scan(data, cat_kind: dict[str, int], piece_bytes: int, on_piece: callable | None) -> dict
 * data: bytes, or a contiguous buffer whose byte just past the end is readable (an mmap of a file whose size
 * is not a multiple of the page size: the rest of the last page reads as zeros). */
/* The document walk of scan(): the result dict, or NULL (an exception set, or sc->why). */
static __attribute__((noinline)) PyObject *scan_doc(Scan *sc, PyObject *top, long long piece_bytes,
                                                    PyObject *on_piece) {
    PyObject *out = NULL;
    const char *p = ws(sc->base), *end = sc->end;
    int seen_events = 0;
    if (*p != '{') {
        sc->why = "the document is not a JSON object";
        goto done;
    }
    p = ws(p + 1);
    if (*p != '}') {
        for (;;) {
            if (*p != '"') {
                sc->why = "bad top-level key";
                goto done;
            }
            int fl = 0;
            const char *q = scan_str(p + 1, end, &fl);
            if (!q || (fl & S_ESC)) {
                sc->why = "bad or escaped top-level key";
                goto done;
            }
            const char *ks = p + 1;
            size_t kn = (size_t)(q - ks);
            p = ws(q + 1);
            if (*p != ':') {
                sc->why = "bad top-level object";
                goto done;
            }
            p = ws(p + 1);
            const char *vs = p;
            if (kn == 11 && memcmp(ks, "traceEvents", 11) == 0) {
                if (seen_events || *p != '[') {
                    sc->why = "traceEvents twice or not a list";
                    goto done;
                }
                seen_events = 1;
                p = events(sc, p, (int64_t)piece_bytes, on_piece);
                if (!p) goto done;
                PyObject *t = Py_BuildValue("(sLL)", "traceEvents", (long long)(vs - sc->base), (long long)(p - sc->base));
                if (!t || PyList_Append(top, t)) {
                    Py_XDECREF(t);
                    goto done;
                }
                Py_DECREF(t);
            } else {
                p = skip_value(sc, p, 1);
                if (!p) goto done;
                PyObject *key = PyUnicode_DecodeUTF8(ks, (Py_ssize_t)kn, "strict");
                if (!key) goto done;
                PyObject *t = Py_BuildValue("(NLL)", key, (long long)(vs - sc->base), (long long)(p - sc->base));
                if (!t || PyList_Append(top, t)) {
                    Py_XDECREF(t);
                    goto done;
                }
                Py_DECREF(t);
            }
            p = ws(p);
            if (*p == ',') {
                p = ws(p + 1);
                continue;
            }
            if (*p == '}') break;
            sc->why = "bad top-level object";
            goto done;
        }
    }
    p = ws(p + 1);
    if (p != end) {
        sc->why = "trailing characters after the JSON object";
        goto done;
    }
    if (!seen_events) {
        sc->why = "no traceEvents";
        goto done;
    }
    out = result(sc, top);
done:
    return out;
}

#ifdef GUARD_SIGBUS
/* A file mapped by the reader can shrink while it is scanned (another process truncating or rewriting it):
 * a read past its new end raises SIGBUS. While a scan runs, a SIGBUS inside the scanned buffer ends the scan
 * as Unsupported (the reader then reads the file again its own way); any other SIGBUS goes to the handler
 * that was there before. The scan holds the GIL, so one scan at a time arms this. */
static sigjmp_buf bus_jmp;
static volatile sig_atomic_t bus_armed;
static const char *volatile bus_lo, *volatile bus_hi;
static struct sigaction bus_old;

static void on_bus(int sig, siginfo_t *si, void *uctx) {
    (void)sig;
    (void)uctx;
    const char *a = (const char *)si->si_addr;
    if (bus_armed && a >= bus_lo && a < bus_hi) {
        bus_armed = 0;
        siglongjmp(bus_jmp, 1);
    }
    sigaction(SIGBUS, &bus_old, NULL); /* not ours: the faulting access runs again under the old handler */
}
#endif

static PyObject *kscan_scan(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer view;
    PyObject *cat_kind, *on_piece;
    long long piece_bytes;
    if (!PyArg_ParseTuple(args, "y*O!LO", &view, &PyDict_Type, &cat_kind, &piece_bytes, &on_piece)) return NULL;
    if (piece_bytes < 1) piece_bytes = 1;
    Scan sc;
    memset(&sc, 0, sizeof(sc));
    sc.base = view.buf;
    sc.end = sc.base + view.len;
    sc.cat_kind = cat_kind;
    sc.last_cat = -1;
    sc.x_ph = -1;
    sc.name_list = PyList_New(0);
    sc.text_list = PyList_New(0);
    PyObject *top = PyList_New(0), *out = NULL;
    if (!sc.name_list || !sc.text_list || !top) goto done;

#ifdef GUARD_SIGBUS
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_bus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    bus_lo = sc.base;
    bus_hi = sc.end + 4096; /* the sentinel byte past the end sits in the last page */
    if (sigsetjmp(bus_jmp, 1)) {
        sigaction(SIGBUS, &bus_old, NULL);
        sc.why = "the file shrank while it was read";
        out = NULL;
        goto done;
    }
    if (sigaction(SIGBUS, &sa, &bus_old) == 0) bus_armed = 1;
#endif
    out = scan_doc(&sc, top, piece_bytes, on_piece);
#ifdef GUARD_SIGBUS
    if (bus_armed) {
        bus_armed = 0;
        sigaction(SIGBUS, &bus_old, NULL);
    }
#endif
done:
    if (!out && !PyErr_Occurred()) PyErr_SetString(Unsupported, sc.why ? sc.why : "unsupported input");
    Py_XDECREF(top);
    scan_free(&sc);
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef methods[] = {
    {"scan", kscan_scan, METH_VARARGS,
     "scan(data, cat_kind, piece_bytes, on_piece) -> dict of kept-event columns (see kat_gui/ingest/kineto.py); "
     "raises Unsupported when the input needs the Python reader."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kscan", "Compiled Kineto JSON scanner.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__kscan(void) {
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Unsupported = PyErr_NewException("kat_gui.ingest._kscan.Unsupported", PyExc_ValueError, NULL);
    if (!Unsupported || PyModule_AddObjectRef(m, "Unsupported", Unsupported) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
