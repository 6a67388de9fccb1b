/* The common case of sanitising feed HTML, in one pass (aggregator/feed/sanitize.py says why).

`clean_simple` writes what nh3 (ammonia over html5ever) writes for a fragment, for fragments an
HTML parser reads as written: allowed and a few other known tags, closed in the order opened,
nothing an HTML tree builder would move, close or reopen; plain entities; plain comments
(dropped); no CR or controls. It answers None for anything else, and nh3 cleans that: the two
are held equal by tests/test_sanitize_fast.py over the corpus and over generated markup.
*/
#include "_speedups.h"

#include <string.h>

typedef struct {
    char *data;
    Py_ssize_t size, room;
} Buf;

static int
buf_put(Buf *b, const char *s, Py_ssize_t n)
{
    if (b->size + n > b->room) {
        Py_ssize_t room = (b->room ? b->room : 256);
        while (room < b->size + n)
            room *= 2;
        char *data = PyMem_Realloc(b->data, room);
        if (data == NULL)
            return -1;
        b->data = data;
        b->room = room;
    }
    memcpy(b->data + b->size, s, n);
    b->size += n;
    return 0;
}

#define PUT(b, s) buf_put((b), (s), (Py_ssize_t)(sizeof(s) - 1))

/* What a tag is to the tree builder (only these are taken; any other tag: None). */
enum {
    K_PLAIN = 1,      /* inserted where it is, closed by its end tag */
    K_VOID = 2,       /* no content, no end tag */
    K_CLOSES_P = 4,   /* a start tag closing an open p */
    K_P = 8,
    K_LI = 16,
    K_DDT = 32,
    K_HEADING = 64,
    K_A = 128,
    K_RAW = 256,      /* script, style: removed with their text */
};

typedef struct {
    const char *name;
    int kind;
} TagKind;

static const TagKind TAG_KINDS[] = {
    {"a", K_PLAIN | K_A},
    {"abbr", K_PLAIN}, {"acronym", K_PLAIN}, {"b", K_PLAIN}, {"bdi", K_PLAIN}, {"bdo", K_PLAIN},
    {"big", K_PLAIN}, {"cite", K_PLAIN}, {"code", K_PLAIN}, {"data", K_PLAIN}, {"del", K_PLAIN},
    {"dfn", K_PLAIN}, {"em", K_PLAIN}, {"font", K_PLAIN}, {"i", K_PLAIN}, {"ins", K_PLAIN},
    {"kbd", K_PLAIN}, {"mark", K_PLAIN}, {"q", K_PLAIN}, {"s", K_PLAIN}, {"samp", K_PLAIN},
    {"small", K_PLAIN}, {"span", K_PLAIN}, {"strike", K_PLAIN}, {"strong", K_PLAIN},
    {"sub", K_PLAIN}, {"sup", K_PLAIN}, {"time", K_PLAIN}, {"tt", K_PLAIN}, {"u", K_PLAIN},
    {"var", K_PLAIN}, {"audio", K_PLAIN}, {"video", K_PLAIN}, {"picture", K_PLAIN},
    {"br", K_VOID}, {"img", K_VOID}, {"wbr", K_VOID}, {"source", K_VOID}, {"track", K_VOID},
    {"hr", K_VOID | K_CLOSES_P},
    {"p", K_PLAIN | K_CLOSES_P | K_P},
    {"div", K_PLAIN | K_CLOSES_P}, {"blockquote", K_PLAIN | K_CLOSES_P},
    {"ul", K_PLAIN | K_CLOSES_P}, {"ol", K_PLAIN | K_CLOSES_P}, {"dl", K_PLAIN | K_CLOSES_P},
    {"figure", K_PLAIN | K_CLOSES_P}, {"figcaption", K_PLAIN | K_CLOSES_P},
    {"article", K_PLAIN | K_CLOSES_P}, {"aside", K_PLAIN | K_CLOSES_P},
    {"footer", K_PLAIN | K_CLOSES_P}, {"header", K_PLAIN | K_CLOSES_P},
    {"hgroup", K_PLAIN | K_CLOSES_P}, {"nav", K_PLAIN | K_CLOSES_P},
    {"details", K_PLAIN | K_CLOSES_P}, {"summary", K_PLAIN | K_CLOSES_P},
    {"center", K_PLAIN | K_CLOSES_P}, {"section", K_PLAIN | K_CLOSES_P},
    {"main", K_PLAIN | K_CLOSES_P}, {"address", K_PLAIN | K_CLOSES_P},
    {"li", K_PLAIN | K_CLOSES_P | K_LI},
    {"dt", K_PLAIN | K_CLOSES_P | K_DDT}, {"dd", K_PLAIN | K_CLOSES_P | K_DDT},
    {"h1", K_PLAIN | K_CLOSES_P | K_HEADING}, {"h2", K_PLAIN | K_CLOSES_P | K_HEADING},
    {"h3", K_PLAIN | K_CLOSES_P | K_HEADING}, {"h4", K_PLAIN | K_CLOSES_P | K_HEADING},
    {"h5", K_PLAIN | K_CLOSES_P | K_HEADING}, {"h6", K_PLAIN | K_CLOSES_P | K_HEADING},
    {"script", K_RAW}, {"style", K_RAW},
    {NULL, 0},
};

static int
tag_kind(const char *name, Py_ssize_t n)
{
    for (const TagKind *t = TAG_KINDS; t->name; t++)
        if (t->name[0] == name[0] && (Py_ssize_t)strlen(t->name) == n &&
            memcmp(t->name, name, n) == 0)
            return t->kind;
    return 0;
}

/* Entities taken (with their semicolon); any other: None. */
typedef struct {
    const char *name;
    Py_UCS4 code;
} Entity;

static const Entity ENTITIES[] = {
    {"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}, {"nbsp", 0xA0},
    {"hellip", 0x2026}, {"mdash", 0x2014}, {"ndash", 0x2013}, {"rsquo", 0x2019},
    {"lsquo", 0x2018}, {"ldquo", 0x201C}, {"rdquo", 0x201D}, {"laquo", 0xAB}, {"raquo", 0xBB},
    {"copy", 0xA9}, {"reg", 0xAE}, {"trade", 0x2122}, {"euro", 0x20AC}, {"pound", 0xA3},
    {"bull", 0x2022}, {"middot", 0xB7}, {"deg", 0xB0}, {"times", 0xD7}, {"eacute", 0xE9},
    {NULL, 0},
};

static inline int
is_alpha(unsigned char c)
{
    return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}

static inline int
is_alnum(unsigned char c)
{
    return is_alpha(c) || (c >= '0' && c <= '9');
}

static inline int
is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\f';
}

/* A code point the tokenizer gives back as written from a numeric reference. */
static int
plain_code(Py_UCS4 c)
{
    if (c == '\t' || c == '\n')
        return 1;
    if (c < 0x20 || (c >= 0x7F && c < 0xA0))
        return 0;
    if (c >= 0xD800 && c <= 0xDFFF)
        return 0;
    if (c >= 0xFDD0 && c <= 0xFDEF)
        return 0;
    if ((c & 0xFFFE) == 0xFFFE || c > 0x10FFFF)
        return 0;
    return 1;
}

/* The reference at s[0] == '&': its code point and length, 0 for a plain '&' (no reference),
   -1 for one not taken. */
static Py_ssize_t
reference(const unsigned char *s, const unsigned char *end, Py_UCS4 *code)
{
    const unsigned char *p = s + 1;
    if (p >= end || (!is_alnum(*p) && *p != '#'))
        return 0;
    if (*p == '#') {
        p++;
        int hex = p < end && (*p | 0x20) == 'x';
        if (hex)
            p++;
        Py_UCS4 value = 0;
        int digits = 0;
        for (; p < end && digits < 8; p++, digits++) {
            unsigned char c = *p;
            if (c >= '0' && c <= '9')
                value = value * (hex ? 16 : 10) + (c - '0');
            else if (hex && (c | 0x20) >= 'a' && (c | 0x20) <= 'f')
                value = value * 16 + ((c | 0x20) - 'a' + 10);
            else
                break;
        }
        if (!digits || p >= end || *p != ';' || !plain_code(value))
            return -1;
        *code = value;
        return p + 1 - s;
    }
    const unsigned char *name = p;
    while (p < end && is_alnum(*p) && p - name < 8)
        p++;
    if (p >= end || *p != ';')
        return -1;
    for (const Entity *e = ENTITIES; e->name; e++)
        if ((Py_ssize_t)strlen(e->name) == p - name && memcmp(e->name, name, p - name) == 0) {
            *code = e->code;
            return p + 1 - s;
        }
    return -1;
}

static int
put_utf8(Buf *b, Py_UCS4 c)
{
    char out[4];
    if (c < 0x80) {
        out[0] = (char)c;
        return buf_put(b, out, 1);
    }
    if (c < 0x800) {
        out[0] = (char)(0xC0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3F));
        return buf_put(b, out, 2);
    }
    if (c < 0x10000) {
        out[0] = (char)(0xE0 | (c >> 12));
        out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (char)(0x80 | (c & 0x3F));
        return buf_put(b, out, 3);
    }
    out[0] = (char)(0xF0 | (c >> 18));
    out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (char)(0x80 | (c & 0x3F));
    return buf_put(b, out, 4);
}

/* A character as the serializer writes it in text: & < > and no-break space escaped. */
static int
put_escaped(Buf *b, Py_UCS4 c)
{
    switch (c) {
    case '&':
        return PUT(b, "&amp;");
    case '<':
        return PUT(b, "&lt;");
    case '>':
        return PUT(b, "&gt;");
    case 0xA0:
        return PUT(b, "&nbsp;");
    }
    return put_utf8(b, c);
}

enum { BAIL = -2, FAIL = -1 };

/* The bytes of text put_text looks at: controls, & < > " DEL, and the lead byte of U+0080 to
   U+00BF (C1 controls, the no-break space). */
static const unsigned char SPECIAL[256] = {
    [0 ... 0x1F] = 1, ['&'] = 1, ['<'] = 1, ['>'] = 1, ['"'] = 1, [0x7F] = 1, [0xC2] = 1,
};

/* Decoded text (UTF-8, references resolved) from s to end into b: escaped as text, or as it
   reads (`raw`, an attribute's value). BAIL where the tokenizer would do more than copy it: a
   control character, CR, a reference not taken. */
static int
put_text(Buf *b, const unsigned char *s, const unsigned char *end, int raw)
{
    const unsigned char *run = s;
    while (s < end) {
        unsigned char c = *s;
        if (!SPECIAL[c]) {
            s++;
            continue;
        }
        if (buf_put(b, (const char *)run, s - run) < 0)
            return FAIL;
        if (c == '&') {
            Py_UCS4 code;
            Py_ssize_t n = reference(s, end, &code);
            if (n < 0)
                return BAIL;
            if (n == 0) {
                code = '&';
                n = 1;
            }
            if ((raw ? put_utf8(b, code) : put_escaped(b, code)) < 0)
                return FAIL;
            s += n;
        }
        else if (c == '<' || c == '>' || c == '"') {
            if ((raw ? put_utf8(b, c) : put_escaped(b, c)) < 0)
                return FAIL;
            s++;
        }
        else if (c == 0xC2) {
            if (s + 1 >= end || (s[1] >= 0x80 && s[1] <= 0x9F))
                return BAIL; /* a C1 control */
            if (s[1] == 0xA0 && !raw) {
                if (PUT(b, "&nbsp;") < 0)
                    return FAIL;
            }
            else if (buf_put(b, (const char *)s, 2) < 0)
                return FAIL;
            s += 2;
        }
        else if (c == '\t' || c == '\n') {
            if (buf_put(b, (const char *)s, 1) < 0)
                return FAIL;
            s++;
        }
        else
            return BAIL; /* CR, another control, DEL */
        run = s;
    }
    return buf_put(b, (const char *)run, s - run) < 0 ? FAIL : 0;
}

/* Whether a link, as the filter made it, is one ammonia keeps as it is: relative (no scheme),
   or http(s) with a host a URL parser takes. Anything else: None (ammonia may drop it). */
static int
plain_link(const char *s, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7F || c == '\\')
            return 0;
    }
    Py_ssize_t at = 0;
    while (at < n && s[at] != ':' && s[at] != '/' && s[at] != '?' && s[at] != '#')
        at++;
    if (at == n || s[at] != ':')
        return 1; /* no scheme */
    Py_ssize_t host;
    if (n >= 7 && memcmp(s, "http://", 7) == 0)
        host = 7;
    else if (n >= 8 && memcmp(s, "https://", 8) == 0)
        host = 8;
    else
        return 0;
    Py_ssize_t stop = host;
    while (stop < n && s[stop] != '/' && s[stop] != '?' && s[stop] != '#')
        stop++;
    Py_ssize_t name_end = stop;
    for (Py_ssize_t i = host; i < stop; i++)
        if (s[i] == ':') {
            name_end = i;
            Py_ssize_t digits = stop - i - 1;
            if (digits < 1 || digits > 5)
                return 0;
            long port = 0;
            for (Py_ssize_t k = i + 1; k < stop; k++) {
                if (s[k] < '0' || s[k] > '9')
                    return 0;
                port = port * 10 + (s[k] - '0');
            }
            if (port > 65535)
                return 0;
            break;
        }
    if (name_end == host)
        return 0;
    for (Py_ssize_t i = host; i < name_end; i++)
        if (!is_alnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '-')
            return 0;
    /* the last label must not be a number, or the host is read as an IPv4 address */
    Py_ssize_t last_end = name_end;
    if (s[last_end - 1] == '.')
        last_end--;
    Py_ssize_t label = last_end;
    while (label > host && s[label - 1] != '.')
        label--;
    return label < last_end && is_alpha((unsigned char)s[label]);
}

#define MAX_DEPTH 128
#define MAX_ATTRIBUTES 16

typedef struct {
    char name[12];
    int kind;
    int kept; /* written out (an allowed tag) */
} Open;

typedef struct {
    const unsigned char *name, *value, *value_end;
    Py_ssize_t name_len;
} Attribute;

typedef struct {
    PyObject *allowed, *generic, *links, *join, *rel;
    Buf out, value;
    Open stack[MAX_DEPTH];
    int depth, open_p, open_li, open_ddt, open_heading, open_a;
} Cleaner;

/* An attribute's value as the serializer writes it: & " < > and no-break space escaped. */
static int
put_value(Buf *b, const char *s, Py_ssize_t n)
{
    const char *run = s;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *escape;
        Py_ssize_t skip = 1;
        if (c == '&')
            escape = "&amp;";
        else if (c == '"')
            escape = "&quot;";
        else if (c == '<')
            escape = "&lt;";
        else if (c == '>')
            escape = "&gt;";
        else if (c == 0xC2 && i + 1 < n && (unsigned char)s[i + 1] == 0xA0) {
            escape = "&nbsp;";
            skip = 2;
        }
        else
            continue;
        if (buf_put(b, run, s + i - run) < 0 || buf_put(b, escape, strlen(escape)) < 0)
            return -1;
        i += skip - 1;
        run = s + i + 1;
    }
    return buf_put(b, run, s + n - run);
}

/* One attribute of a kept tag, written out if allowed (`names`, or generic), its link made
   absolute by `join` for attributes in `links`. */
static int
put_attribute(Cleaner *c, PyObject *names, Attribute *a)
{
    char lowered[32];
    for (Py_ssize_t i = 0; i < a->name_len; i++)
        lowered[i] = (char)(a->name[i] | 0x20);
    PyObject *name = PyUnicode_FromStringAndSize(lowered, a->name_len);
    if (name == NULL)
        return FAIL;
    int allowed = names != NULL ? PySet_Contains(names, name) : 0;
    if (allowed == 0)
        allowed = PySet_Contains(c->generic, name);
    int link = allowed > 0 ? PySet_Contains(c->links, name) : 0;
    Py_DECREF(name);
    if (allowed < 0 || link < 0)
        return FAIL;
    if (!allowed)
        return 0;
    c->value.size = 0;
    int done = put_text(&c->value, a->value, a->value_end, 1);
    if (done < 0)
        return done;
    const char *text = c->value.data ? c->value.data : "";
    Py_ssize_t size = c->value.size;
    PyObject *joined = NULL;
    if (link) {
        PyObject *raw = PyUnicode_DecodeUTF8(text, size, "strict");
        if (raw == NULL)
            return FAIL;
        joined = PyObject_CallOneArg(c->join, raw);
        Py_DECREF(raw);
        if (joined == NULL)
            return FAIL;
        if (!PyUnicode_Check(joined) || (text = PyUnicode_AsUTF8AndSize(joined, &size)) == NULL ||
            !plain_link(text, size)) {
            Py_DECREF(joined);
            PyErr_Clear();
            return BAIL;
        }
    }
    int result = buf_put(&c->out, " ", 1) < 0 || buf_put(&c->out, lowered, a->name_len) < 0 ||
                 PUT(&c->out, "=\"") < 0 || put_value(&c->out, text, size) < 0;
    Py_XDECREF(joined);
    if (result)
        return FAIL;
    return PUT(&c->out, "\"") < 0 ? FAIL : 0;
}

/* The tag at s ('<' then a letter): written, pushed or popped; the position after it, or NULL
   with *error set (BAIL or FAIL). */
static const unsigned char *
start_tag(Cleaner *c, const unsigned char *s, const unsigned char *end, int *error)
{
    const unsigned char *p = s + 1, *name = p;
    char lowered[12];
    while (p < end && is_alnum(*p)) {
        if (p - name >= 11) {
            *error = BAIL;
            return NULL;
        }
        lowered[p - name] = (char)(*p | 0x20);
        p++;
    }
    Py_ssize_t name_len = p - name;
    lowered[name_len] = 0;
    if (p >= end || !(is_space(*p) || *p == '/' || *p == '>')) {
        *error = BAIL;
        return NULL;
    }
    int kind = tag_kind(lowered, name_len);
    if (!kind || ((kind & K_CLOSES_P) && c->open_p) || ((kind & K_LI) && c->open_li) ||
        ((kind & K_DDT) && c->open_ddt) || ((kind & K_HEADING) && c->open_heading) ||
        ((kind & K_A) && c->open_a)) {
        *error = BAIL;
        return NULL;
    }
    /* its attributes, as the tokenizer reads them */
    Attribute attributes[MAX_ATTRIBUTES];
    int count = 0, closed = 0;
    for (;;) {
        while (p < end && is_space(*p))
            p++;
        if (p >= end)
            goto bail;
        if (*p == '>') {
            p++;
            break;
        }
        if (*p == '/') {
            if (p + 1 >= end || p[1] != '>')
                goto bail;
            closed = 1;
            p += 2;
            break;
        }
        if (!is_alpha(*p) || count == MAX_ATTRIBUTES)
            goto bail;
        Attribute *a = &attributes[count++];
        a->name = p;
        while (p < end && (is_alnum(*p) || *p == '-' || *p == '_' || *p == ':'))
            p++;
        a->name_len = p - a->name;
        if (a->name_len > 31 || p >= end)
            goto bail;
        for (int i = 0; i < count - 1; i++) /* a repeated attribute: the first one wins */
            if (attributes[i].name_len == a->name_len) {
                Py_ssize_t k = 0;
                while (k < a->name_len && (attributes[i].name[k] | 0x20) == (a->name[k] | 0x20))
                    k++;
                if (k == a->name_len)
                    goto bail;
            }
        const unsigned char *after = p;
        while (p < end && is_space(*p))
            p++;
        if (p >= end)
            goto bail;
        if (*p != '=') {
            a->value = a->value_end = p;
            if (after == p && *p != '/' && *p != '>')
                goto bail;
            continue;
        }
        p++;
        while (p < end && is_space(*p))
            p++;
        if (p >= end)
            goto bail;
        if (*p == '"' || *p == '\'') {
            unsigned char quote = *p++;
            a->value = p;
            while (p < end && *p != quote)
                p++;
            if (p >= end)
                goto bail;
            a->value_end = p++;
            if (p >= end || !(is_space(*p) || *p == '/' || *p == '>'))
                goto bail;
        }
        else {
            a->value = p;
            while (p < end && !is_space(*p) && *p != '>') {
                if (*p == '"' || *p == '\'' || *p == '<' || *p == '=' || *p == '`')
                    goto bail;
                p++;
            }
            a->value_end = p;
            if (a->value == p)
                goto bail;
        }
    }
    if (closed && !(kind & K_VOID))
        goto bail; /* the parser ignores the slash: the element stays open */
    if (kind & K_RAW) {
        /* removed with its text, which runs to its end tag */
        for (const unsigned char *q = p; q + 1 < end; q++) {
            if (q[0] != '<')
                continue;
            if (q[1] == '!')
                goto bail; /* a script's comment-like escapes */
            if (q[1] != '/' || end - q < name_len + 3)
                continue;
            Py_ssize_t k = 0;
            while (k < name_len && (q[2 + k] | 0x20) == (unsigned char)lowered[k])
                k++;
            if (k < name_len)
                continue;
            const unsigned char *t = q + 2 + name_len;
            if (t < end && !(is_space(*t) || *t == '/' || *t == '>'))
                continue;
            while (t < end && is_space(*t))
                t++;
            if (t >= end || *t != '>')
                goto bail;
            return t + 1;
        }
        goto bail;
    }
    PyObject *key = PyUnicode_FromStringAndSize(lowered, name_len);
    if (key == NULL)
        goto fail;
    PyObject *names = PyDict_GetItemWithError(c->allowed, key);
    Py_DECREF(key);
    if (names == NULL && PyErr_Occurred())
        goto fail;
    int kept = names != NULL;
    if (kept) {
        if (buf_put(&c->out, "<", 1) < 0 || buf_put(&c->out, lowered, name_len) < 0)
            goto fail;
        for (int i = 0; i < count; i++) {
            Attribute *a = &attributes[i];
            if ((kind & K_A) && a->name_len == 3 && (a->name[0] | 0x20) == 'r' &&
                (a->name[1] | 0x20) == 'e' && (a->name[2] | 0x20) == 'l')
                continue; /* the link's rel is ammonia's own, written last */
            int done = put_attribute(c, names == Py_None ? NULL : names, a);
            if (done == BAIL)
                goto bail;
            if (done < 0)
                goto fail;
        }
        if (kind & K_A) {
            Py_ssize_t size;
            const char *rel = PyUnicode_AsUTF8AndSize(c->rel, &size);
            if (rel == NULL || PUT(&c->out, " rel=\"") < 0 || buf_put(&c->out, rel, size) < 0 ||
                PUT(&c->out, "\"") < 0)
                goto fail;
        }
        if (buf_put(&c->out, ">", 1) < 0)
            goto fail;
    }
    if (!(kind & K_VOID)) {
        if (c->depth == MAX_DEPTH)
            goto bail;
        Open *o = &c->stack[c->depth++];
        memcpy(o->name, lowered, name_len + 1);
        o->kind = kind;
        o->kept = kept;
        c->open_p += (kind & K_P) != 0;
        c->open_li += (kind & K_LI) != 0;
        c->open_ddt += (kind & K_DDT) != 0;
        c->open_heading += (kind & K_HEADING) != 0;
        c->open_a += (kind & K_A) != 0;
    }
    return p;
bail:
    *error = BAIL;
    return NULL;
fail:
    *error = FAIL;
    return NULL;
}

/* The end tag at s ('</' then a letter), closing the element opened last. */
static const unsigned char *
end_tag(Cleaner *c, const unsigned char *s, const unsigned char *end, int *error)
{
    const unsigned char *p = s + 2, *name = p;
    while (p < end && is_alnum(*p))
        p++;
    Py_ssize_t name_len = p - name;
    while (p < end && is_space(*p))
        p++;
    if (p >= end || *p != '>' || c->depth == 0) {
        *error = BAIL;
        return NULL;
    }
    Open *o = &c->stack[c->depth - 1];
    if ((Py_ssize_t)strlen(o->name) != name_len) {
        *error = BAIL;
        return NULL;
    }
    for (Py_ssize_t k = 0; k < name_len; k++)
        if ((name[k] | 0x20) != (unsigned char)o->name[k]) {
            *error = BAIL;
            return NULL;
        }
    if (o->kept && (PUT(&c->out, "</") < 0 || buf_put(&c->out, o->name, name_len) < 0 ||
                    buf_put(&c->out, ">", 1) < 0)) {
        *error = FAIL;
        return NULL;
    }
    int kind = o->kind;
    c->open_p -= (kind & K_P) != 0;
    c->open_li -= (kind & K_LI) != 0;
    c->open_ddt -= (kind & K_DDT) != 0;
    c->open_heading -= (kind & K_HEADING) != 0;
    c->open_a -= (kind & K_A) != 0;
    c->depth--;
    return p + 1;
}

/* Past the comment at s (`<!--`), which ammonia drops; NULL for one the tokenizer ends
   otherwise than at its first `-->` (`<!-->`, `--!>`, the end of the text). */
static const unsigned char *
comment_end(const unsigned char *s, const unsigned char *end)
{
    const unsigned char *p = s + 4;
    if (p < end && (*p == '>' || (*p == '-' && p + 1 < end && p[1] == '>')))
        return NULL;
    for (; p + 3 <= end; p++) {
        if (p[0] != '-' || p[1] != '-')
            continue;
        if (p[2] == '>')
            return p + 3;
        if (p[2] == '!' && p + 3 < end && p[3] == '>')
            return NULL;
    }
    return NULL;
}

static int
clean(Cleaner *c, const unsigned char *s, const unsigned char *end)
{
    while (s < end) {
        const unsigned char *lt = memchr(s, '<', end - s);
        const unsigned char *stop = lt ? lt : end;
        int done = put_text(&c->out, s, stop, 0);
        if (done < 0)
            return done;
        if (lt == NULL)
            break;
        s = lt;
        int error = 0;
        if (s + 1 < end && is_alpha(s[1]))
            s = start_tag(c, s, end, &error);
        else if (s + 2 < end && s[1] == '/' && is_alpha(s[2]))
            s = end_tag(c, s, end, &error);
        else if (end - s >= 4 && memcmp(s, "<!--", 4) == 0) {
            s = comment_end(s, end);
            if (s == NULL)
                return BAIL;
        }
        else if (s + 1 < end && (s[1] == '/' || s[1] == '!' || s[1] == '?'))
            return BAIL; /* a doctype, a bogus comment */
        else {
            if (PUT(&c->out, "&lt;") < 0)
                return FAIL;
            s++;
        }
        if (s == NULL)
            return error;
    }
    return c->depth == 0 ? 0 : BAIL; /* an element left open: the parser closes it */
}

PyObject *
sanitize_clean_simple(PyObject *module, PyObject *args)
{
    PyObject *fragment;
    Cleaner c;
    memset(&c, 0, sizeof(c));
    if (!PyArg_ParseTuple(args, "UO!O!O!OU:clean_simple", &fragment, &PyDict_Type, &c.allowed,
                          &PyFrozenSet_Type, &c.generic, &PyFrozenSet_Type, &c.links, &c.join,
                          &c.rel))
        return NULL;
    Py_ssize_t size;
    const char *text = PyUnicode_AsUTF8AndSize(fragment, &size);
    if (text == NULL) { /* a lone surrogate: the parser's business */
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    int done = clean(&c, (const unsigned char *)text, (const unsigned char *)text + size);
    PyObject *result = NULL;
    if (done == 0)
        result = PyUnicode_DecodeUTF8(c.out.data ? c.out.data : "", c.out.size, "strict");
    else if (done == BAIL) {
        result = Py_None;
        Py_INCREF(result);
    }
    else if (!PyErr_Occurred())
        PyErr_NoMemory(); /* a buffer could not grow */
    PyMem_Free(c.out.data);
    PyMem_Free(c.value.data);
    return result;
}
