/* The per-item text work of filing, in C: HTML made plain text, ASCII text folded, the words that
 * may start a term found, and an item's MinHash signature; and two scans of a helper's reading
 * (characters XML cannot carry, a string as JSON). Each function gives exactly what the Python
 * code it stands in for gives (tests/test_speedups.py holds the two equal); aggregator/speedups.py
 * says why it exists and falls back to the Python code where this was not built.
 *
 * Strings are read as the UTF-8 CPython keeps of them (for ASCII text, the text itself): folded
 * words are compared and hashed byte by byte, which for UTF-8 is the same as character by
 * character. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_speedups.h"

/* ---------------------------------------------------------------- crc32, as zlib computes it */

/* crc_tables[0] is the usual table; [k] is a byte's crc followed by k zero bytes, so that
 * eight bytes are taken at a time (slicing by 8): a shingle is a dozen bytes, a byte at a time
 * a tenth of an item's signature. */
static uint32_t crc_tables[8][256];
#define crc_table crc_tables[0]

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
    for (int k = 1; k < 8; k++)
        for (uint32_t i = 0; i < 256; i++)
            crc_tables[k][i] = (crc_tables[k - 1][i] >> 8) ^ crc_table[crc_tables[k - 1][i] & 0xFF];
}

/* zlib.crc32(data, crc): crc32(b, crc32(a)) == crc32(a + b) */
static uint32_t
crc32_update(uint32_t crc, const unsigned char *p, Py_ssize_t n)
{
    crc = ~crc;
#if PY_LITTLE_ENDIAN
    while (n >= 8) {
        uint32_t low, high;
        memcpy(&low, p, 4);
        memcpy(&high, p + 4, 4);
        low ^= crc;
        crc = crc_tables[7][low & 0xFF] ^ crc_tables[6][(low >> 8) & 0xFF]
              ^ crc_tables[5][(low >> 16) & 0xFF] ^ crc_tables[4][low >> 24]
              ^ crc_tables[3][high & 0xFF] ^ crc_tables[2][(high >> 8) & 0xFF]
              ^ crc_tables[1][(high >> 16) & 0xFF] ^ crc_tables[0][high >> 24];
        p += 8;
        n -= 8;
    }
#endif
    while (n-- > 0)
        crc = crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* A str made by the old (wstr) API is read only once made ready; since 3.12 every str is. */
static inline int
ensure_ready(PyObject *text)
{
#if PY_VERSION_HEX < 0x030C0000
    return PyUnicode_READY(text);
#else
    (void)text;
    return 0;
#endif
}

/* The one str argument of a METH_O function, ready to read; NULL with TypeError otherwise. */
static PyObject *
str_argument(PyObject *text, const char *function)
{
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "%s() takes a str", function);
        return NULL;
    }
    return ensure_ready(text) < 0 ? NULL : text;
}

/* ---------------------------------------------------------------- folding ASCII text */

static inline int
ascii_word_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* The next word (run of ASCII letters and digits) of s[*at:n] as [*start, *end), *at moved past
 * it; 0 when there is none. */
static inline int
next_ascii_word(const unsigned char *s, Py_ssize_t n, Py_ssize_t *at, Py_ssize_t *start,
                Py_ssize_t *end)
{
    Py_ssize_t i = *at;
    while (i < n && !ascii_word_char(s[i]))
        i++;
    if (i == n) {
        *at = n;
        return 0;
    }
    *start = i;
    while (i < n && ascii_word_char(s[i]))
        i++;
    *end = *at = i;
    return 1;
}

/* ascii_words_text(text, first, last) -> str | None: in ASCII text, the text from the start of
 * word `first` to the end of word `last` (words counted from 0 as fold_ascii finds them: runs of
 * letters and digits, the underscore a separator), as the item wrote them: a hit's words, found
 * without making every word's place. None for other text or words it does not have. */
static PyObject *
ascii_words_text(PyObject *module, PyObject *args)
{
    PyObject *text;
    Py_ssize_t first, last;
    if (!PyArg_ParseTuple(args, "Unn:ascii_words_text", &text, &first, &last))
        return NULL;
    if (ensure_ready(text) < 0)
        return NULL;
    if (!PyUnicode_IS_ASCII(text) || first < 0 || last < first)
        Py_RETURN_NONE;
    const unsigned char *s = PyUnicode_1BYTE_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), word = -1, start = -1, at = 0, begin, end;
    while (next_ascii_word(s, n, &at, &begin, &end)) {
        word++;
        if (word == first)
            start = begin;
        if (word == last)
            return PyUnicode_Substring(text, start, end);
    }
    Py_RETURN_NONE;
}

/* fold_ascii(text) -> str | None: for ASCII text, its words (runs of letters and digits, the
 * underscore a separator) lowered and joined by single spaces, as
 * " ".join(re.findall(r"\w+", text.lower().replace("_", " "))) gives; None for other text. */
static PyObject *fold_ascii_text(PyObject *text);

static PyObject *
fold_ascii(PyObject *module, PyObject *text)
{
    if (str_argument(text, "fold_ascii") == NULL)
        return NULL;
    if (!PyUnicode_IS_ASCII(text))
        Py_RETURN_NONE;
    return fold_ascii_text(text);
}

/* fold_ascii of a ready ASCII str. */
static PyObject *
fold_ascii_text(PyObject *text)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    const unsigned char *s = PyUnicode_1BYTE_DATA(text);
    /* the length first, then the string is written in place: no second buffer */
    Py_ssize_t size = 0, words = 0, from = 0, start, end;
    while (next_ascii_word(s, n, &from, &start, &end)) {
        size += end - start;
        words++;
    }
    if (words > 1)
        size += words - 1;
    PyObject *result = PyUnicode_New(size, 127);
    if (result == NULL)
        return NULL;
    unsigned char *out = PyUnicode_1BYTE_DATA(result);
    Py_ssize_t at = 0;
    for (Py_ssize_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (!ascii_word_char(c)) {
            i++;
            continue;
        }
        if (at)
            out[at++] = ' ';
        while (i < n && ascii_word_char(c = s[i])) {
            out[at++] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
            i++;
        }
    }
    return result;
}

/* ---------------------------------------------------------------- text XML cannot carry */

/* Whether c is one of the characters normalise.py's _NOT_XML finds: C0 controls but tab, LF
 * and CR; DEL and the C1 controls; lone surrogates; U+FFFE and U+FFFF. */
static inline int
not_xml_char(Py_UCS4 c)
{
    if (c < 0x20)
        return c != '\t' && c != '\n' && c != '\r';
    if (c < 0x7f)
        return 0;
    if (c <= 0x9f)
        return 1;
    return (c >= 0xd800 && c <= 0xdfff) || c == 0xfffe || c == 0xffff;
}

/* not_xml(text) -> bool: whether text holds such a character, as _NOT_XML.search(text) says
 * (a regex scan of a character class cost feeds' texts some 55 instructions a character). */
static PyObject *
not_xml(PyObject *module, PyObject *text)
{
    if (str_argument(text, "not_xml") == NULL)
        return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    const unsigned char *bytes = kind == PyUnicode_1BYTE_KIND ? data : NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (not_xml_char(bytes != NULL ? bytes[i] : PyUnicode_READ(kind, data, i)))
            Py_RETURN_TRUE;
    Py_RETURN_FALSE;
}

/* ---------------------------------------------------------------- a JSON string */

/* Whether c is written as it is in a JSON string. */
static inline int
json_plain(Py_UCS4 c)
{
    return c >= 0x20 && c != '"' && c != '\\';
}

/* How much longer than itself c is written in a JSON string: \x is one more, \u00XX five. */
static inline Py_ssize_t
json_extra(Py_UCS4 c)
{
    if (json_plain(c))
        return 0;
    if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t')
        return 1;
    return 5;
}

/* json_string(text) -> str: text as a JSON string, exactly as json's encode_basestring writes it
 * (json.dumps with ensure_ascii=False): quotes around, \" \\ \b \f \n \r \t, other controls as
 * \u00XX in lower case, everything else as it is. json's own does a character at a time, twice
 * (the length, then the text); an entry's digest encodes a few KB of HTML, whose characters
 * mostly need nothing: here the runs of one-byte text that need nothing are copied whole. */
static PyObject *
json_string(PyObject *module, PyObject *text)
{
    if (str_argument(text, "json_string") == NULL)
        return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    const unsigned char *bytes = kind == PyUnicode_1BYTE_KIND ? data : NULL;
    Py_ssize_t size = n + 2;
    for (Py_ssize_t i = 0; i < n; i++)
        size += json_extra(bytes != NULL ? bytes[i] : PyUnicode_READ(kind, data, i));
    /* the same greatest character, so the same kind as the text */
    PyObject *result = PyUnicode_New(size, PyUnicode_MAX_CHAR_VALUE(text));
    if (result == NULL)
        return NULL;
    void *out = PyUnicode_DATA(result);
    Py_ssize_t at = 0;
    PyUnicode_WRITE(kind, out, at++, '"');
    static const char hex[] = "0123456789abcdef";
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (json_plain(c)) {
            if (bytes == NULL) {
                PyUnicode_WRITE(kind, out, at++, c);
                continue;
            }
            Py_ssize_t end = i + 1;
            while (end < n && json_plain(bytes[end]))
                end++;
            memcpy((unsigned char *)out + at, bytes + i, (size_t)(end - i));
            at += end - i;
            i = end - 1;
            continue;
        }
        PyUnicode_WRITE(kind, out, at++, '\\');
        switch (c) {
        case '"': PyUnicode_WRITE(kind, out, at++, '"'); break;
        case '\\': PyUnicode_WRITE(kind, out, at++, '\\'); break;
        case '\b': PyUnicode_WRITE(kind, out, at++, 'b'); break;
        case '\f': PyUnicode_WRITE(kind, out, at++, 'f'); break;
        case '\n': PyUnicode_WRITE(kind, out, at++, 'n'); break;
        case '\r': PyUnicode_WRITE(kind, out, at++, 'r'); break;
        case '\t': PyUnicode_WRITE(kind, out, at++, 't'); break;
        default:
            PyUnicode_WRITE(kind, out, at++, 'u');
            PyUnicode_WRITE(kind, out, at++, '0');
            PyUnicode_WRITE(kind, out, at++, '0');
            PyUnicode_WRITE(kind, out, at++, hex[(c >> 4) & 0xF]);
            PyUnicode_WRITE(kind, out, at++, hex[c & 0xF]);
        }
    }
    PyUnicode_WRITE(kind, out, at++, '"');
    assert(at == size);
    return result;
}

/* ---------------------------------------------------------------- letters a regex needs */

/* Whether the needs (`count` str) are all plain ASCII and not empty, as `caseless_text_holds`
 * takes them; -1 with ValueError if not. */
static int
check_needs(PyObject *const *needs, Py_ssize_t count)
{
    for (Py_ssize_t k = 0; k < count; k++)
        if (!PyUnicode_Check(needs[k]) || ensure_ready(needs[k]) < 0 ||
            !PyUnicode_IS_ASCII(needs[k]) || PyUnicode_GET_LENGTH(needs[k]) == 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "needs must be ASCII, not empty");
            return -1;
        }
    return 0;
}

/* Whether a text's `caseless` (terms.py: lowered, the four letters beyond ASCII that a regex
 * ignoring case matches with an ASCII one written as that letter) holds any of `needs` (checked
 * by check_needs). Other characters lower to no ASCII letter (tests/test_speedups.py tries every
 * one), so each stands as a byte no need holds. `*buffer` (of `*room` bytes) is grown as needed
 * and kept for the next text. 1 or 0, or -1 with an exception. */
static int
caseless_text_holds(PyObject *text, PyObject *const *needs, Py_ssize_t need_count,
                    unsigned char **buffer, Py_ssize_t *room)
{
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "texts must be str");
        return -1;
    }
    if (ensure_ready(text) < 0)
        return -1;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (n > *room) {
        PyMem_Free(*buffer);
        *room = n * 2;
        if ((*buffer = PyMem_Malloc(*room)) == NULL) {
            *room = 0;
            PyErr_NoMemory();
            return -1;
        }
    }
    unsigned char *lowered = *buffer;
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 128)
            lowered[i] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : (unsigned char)c;
        else if (c == 0x130 || c == 0x131)
            lowered[i] = 'i';
        else if (c == 0x212a)
            lowered[i] = 'k';
        else if (c == 0x17f)
            lowered[i] = 's';
        else
            lowered[i] = 0x80;
    }
    for (Py_ssize_t k = 0; k < need_count; k++) {
        const unsigned char *need = PyUnicode_1BYTE_DATA(needs[k]);
        Py_ssize_t size = PyUnicode_GET_LENGTH(needs[k]);
        for (Py_ssize_t at = 0; at + size <= n;) {
            const unsigned char *first = memchr(lowered + at, need[0], n - size + 1 - at);
            if (first == NULL)
                break;
            if (memcmp(first, need, size) == 0)
                return 1;
            at = first - lowered + 1;
        }
    }
    return 0;
}

/* caseless_holds(texts, needs) -> bool: whether any text's `caseless` holds any of `needs`
 * (plain ASCII, lowered). Most items hold none: lowering a copy of their whole text and
 * searching it cost more than the rest of their regex terms. */
static PyObject *
caseless_holds(PyObject *module, PyObject *args)
{
    PyObject *texts, *needs, *text_seq = NULL, *need_seq = NULL, *result = NULL;
    unsigned char *buffer = NULL;
    Py_ssize_t room = 0;
    if (!PyArg_ParseTuple(args, "OO:caseless_holds", &texts, &needs))
        return NULL;
    text_seq = PySequence_Fast(texts, "caseless_holds: texts must be a sequence of str");
    need_seq = text_seq ? PySequence_Fast(needs, "caseless_holds: needs must be a sequence of str")
                        : NULL;
    if (need_seq == NULL)
        goto done;
    Py_ssize_t need_count = PySequence_Fast_GET_SIZE(need_seq);
    PyObject **need_items = PySequence_Fast_ITEMS(need_seq);
    if (check_needs(need_items, need_count) < 0)
        goto done;
    Py_ssize_t text_count = PySequence_Fast_GET_SIZE(text_seq);
    PyObject **text_items = PySequence_Fast_ITEMS(text_seq);
    for (Py_ssize_t t = 0; t < text_count; t++) {
        int held = caseless_text_holds(text_items[t], need_items, need_count, &buffer, &room);
        if (held < 0)
            goto done;
        if (held) {
            result = Py_True;
            goto done;
        }
    }
    result = Py_False;
done:
    Py_XINCREF(result);
    PyMem_Free(buffer);
    Py_XDECREF(text_seq);
    Py_XDECREF(need_seq);
    return result;
}

/* ---------------------------------------------------------------- words of other text */

/* Whether c is in one of the sorted, disjoint ranges (first, last pairs). */
static inline int
in_ranges(const uint32_t *ranges, Py_ssize_t count, Py_UCS4 c)
{
    Py_ssize_t lo = 0, hi = count;
    while (lo < hi) {
        Py_ssize_t m = lo + (hi - lo) / 2;
        if (ranges[2 * m + 1] < c)
            lo = m + 1;
        else
            hi = m;
    }
    return lo < count && ranges[2 * lo] <= c;
}

/* A growing buffer of words joined by single spaces, fed a character at a time. */
typedef struct {
    Py_UCS4 *out;
    Py_ssize_t size, room;
    int inside;
    const uint32_t *ranges;
    Py_ssize_t range_count;
} Joiner;

static inline int
joiner_feed(Joiner *j, Py_UCS4 c)
{
    int word = c < 128 ? ascii_word_char((unsigned char)c)
                       : (Py_UNICODE_ISALNUM(c) || in_ranges(j->ranges, j->range_count, c));
    if (word) {
        if (j->size + 2 > j->room) {
            Py_ssize_t room = j->room * 2 + 16;
            Py_UCS4 *out = PyMem_Realloc(j->out, room * sizeof(Py_UCS4));
            if (out == NULL)
                return -1;
            j->out = out;
            j->room = room;
        }
        if (!j->inside && j->size)
            j->out[j->size++] = ' ';
        j->out[j->size++] = c;
    }
    j->inside = word;
    return 0;
}

/* fold_words(text, runs, fold, limit, marks) -> str: `folded_words` of text that is not plain
 * ASCII (text.py): its ASCII lowered, each run of other characters folded by `fold` (remembered
 * in the dict `runs`, emptied when it holds `limit`), then its words (runs of what \w matches
 * in str, letters and digits of any script, and of marks: `marks`, the bytes of sorted first,
 * last pairs of code points as uint32; the underscore separates words) joined by single
 * spaces, as " ".join(WORD.findall(...)) gives. Splitting the text into runs and joining it
 * again in Python cost 5 us a field, and the regex 14 us (news's curly quotes and dashes make
 * most fields such text). */
static PyObject *fold_other_text(PyObject *text, PyObject *runs, PyObject *fold, Py_ssize_t limit,
                                 const uint32_t *ranges, Py_ssize_t range_count);

static PyObject *
fold_words(PyObject *module, PyObject *args)
{
    PyObject *text, *runs, *fold;
    Py_ssize_t limit;
    Py_buffer marks;
    if (!PyArg_ParseTuple(args, "UO!Ony*:fold_words", &text, &PyDict_Type, &runs, &fold, &limit,
                          &marks))
        return NULL;
    PyObject *result = NULL;
    if (marks.len % 8)
        PyErr_SetString(PyExc_ValueError, "fold_words: marks must be pairs of uint32");
    else if (ensure_ready(text) == 0)
        result = fold_other_text(text, runs, fold, limit, (const uint32_t *)marks.buf, marks.len / 8);
    PyBuffer_Release(&marks);
    return result;
}

/* fold_words of a ready str, `runs` a dict, the marks `range_count` pairs at `ranges`. */
static PyObject *
fold_other_text(PyObject *text, PyObject *runs, PyObject *fold, Py_ssize_t limit,
                const uint32_t *ranges, Py_ssize_t range_count)
{
    PyObject *result = NULL;
    Joiner j = {NULL, 0, 0, 0, ranges, range_count};
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    j.room = n + 16;
    j.out = PyMem_Malloc(j.room * sizeof(Py_UCS4));
    if (j.out == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n;) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 128) {
            if (joiner_feed(&j, (c >= 'A' && c <= 'Z') ? c + 32 : c) < 0)
                goto nomemory;
            i++;
            continue;
        }
        Py_ssize_t start = i;
        while (i < n && PyUnicode_READ(kind, data, i) >= 128)
            i++;
        PyObject *run = PyUnicode_Substring(text, start, i);
        if (run == NULL)
            goto done;
        PyObject *folded = PyDict_GetItemWithError(runs, run); /* borrowed */
        if (folded != NULL)
            Py_INCREF(folded);
        else if (!PyErr_Occurred()) {
            folded = PyObject_CallOneArg(fold, run);
            if (folded != NULL && !PyUnicode_Check(folded)) {
                PyErr_SetString(PyExc_TypeError, "fold_words: fold must give a str");
                Py_CLEAR(folded);
            }
            if (folded != NULL && PyDict_GET_SIZE(runs) >= limit)
                PyDict_Clear(runs);
            if (folded != NULL && PyDict_SetItem(runs, run, folded) < 0)
                Py_CLEAR(folded);
        }
        Py_DECREF(run);
        if (folded == NULL || ensure_ready(folded) < 0) {
            Py_XDECREF(folded);
            goto done;
        }
        int fkind = PyUnicode_KIND(folded);
        const void *fdata = PyUnicode_DATA(folded);
        Py_ssize_t fn = PyUnicode_GET_LENGTH(folded);
        for (Py_ssize_t k = 0; k < fn; k++)
            if (joiner_feed(&j, PyUnicode_READ(fkind, fdata, k)) < 0) {
                Py_DECREF(folded);
                goto nomemory;
            }
        Py_DECREF(folded);
    }
    result = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, j.out, j.size);
    goto done;
nomemory:
    PyErr_NoMemory();
done:
    PyMem_Free(j.out);
    return result;
}

/* words_text(text, first, last, count, marks, token_fold) -> str | None: the text from the start
 * of the word that folds to folded word `first` to the end of the one that folds to `last`
 * (text.py's Field._spans, read off in one walk): the words are runs of what WORD matches (a
 * letter or digit of any script, the underscore, and `marks`, as in fold_words); one without
 * the underscore in ASCII folds to one word, any other to the words of `token_fold(word)`
 * (text.folded_token, remembered there). None where they fold to other than `count` words in
 * all (the two cannot be lined up), or `first` and `last` are not such words. A field's every
 * word found by a regex, to show the words of a hit or two, was a twentieth of filing. */
static PyObject *
words_text(PyObject *module, PyObject *args)
{
    PyObject *text, *token_fold;
    Py_ssize_t first, last, count;
    Py_buffer marks;
    if (!PyArg_ParseTuple(args, "Unnny*O:words_text", &text, &first, &last, &count, &marks,
                          &token_fold))
        return NULL;
    PyObject *result = NULL;
    if (marks.len % 8) {
        PyErr_SetString(PyExc_ValueError, "words_text: marks must be pairs of uint32");
        goto done;
    }
    if (ensure_ready(text) < 0)
        goto done;
    const uint32_t *ranges = (const uint32_t *)marks.buf;
    Py_ssize_t range_count = marks.len / 8;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t folded = 0, start = -1, end = -1;
    if (first < 0 || last < first || last >= count) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    for (Py_ssize_t i = 0; i < n;) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        int plain = c < 128;
        if (!(plain ? ascii_word_char((unsigned char)c) || c == '_'
                    : Py_UNICODE_ISALNUM(c) || in_ranges(ranges, range_count, c))) {
            i++;
            continue;
        }
        Py_ssize_t at = i;
        int simple = 1; /* ASCII without the underscore */
        for (; i < n; i++) {
            c = PyUnicode_READ(kind, data, i);
            if (c < 128) {
                if (!ascii_word_char((unsigned char)c)) {
                    if (c != '_')
                        break;
                    simple = 0;
                }
            } else if (Py_UNICODE_ISALNUM(c) || in_ranges(ranges, range_count, c))
                simple = 0;
            else
                break;
        }
        Py_ssize_t made = 1;
        if (!simple) {
            PyObject *word = PyUnicode_Substring(text, at, i);
            PyObject *token = word ? PyObject_CallOneArg(token_fold, word) : NULL;
            Py_XDECREF(word);
            if (token == NULL)
                goto done;
            if (!PyUnicode_Check(token) || ensure_ready(token) < 0) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_TypeError, "words_text: token_fold must give a str");
                Py_DECREF(token);
                goto done;
            }
            Py_ssize_t size = PyUnicode_GET_LENGTH(token);
            int token_kind = PyUnicode_KIND(token);
            const void *token_data = PyUnicode_DATA(token);
            made = size ? 1 : 0; /* folded words are joined by single spaces */
            for (Py_ssize_t k = 0; k < size; k++)
                made += PyUnicode_READ(token_kind, token_data, k) == ' ';
            Py_DECREF(token);
        }
        if (made && folded <= first && first < folded + made)
            start = at;
        if (made && folded <= last && last < folded + made)
            end = i;
        folded += made;
    }
    if (folded != count || start < 0 || end < 0)
        result = Py_NewRef(Py_None);
    else
        result = PyUnicode_Substring(text, start, end);
done:
    PyBuffer_Release(&marks);
    return result;
}

/* ---------------------------------------------------------------- words of folded text */

typedef struct {
    const char *start;
    Py_ssize_t size;
} Span;

/* The words of folded text (words joined by single spaces), at most `limit` (-1: all), into
 * `spans` (room for `room`); returns how many, or -1 when there were more than `room`. */
static Py_ssize_t
split_words(const char *s, Py_ssize_t n, Py_ssize_t limit, Span *spans, Py_ssize_t room)
{
    Py_ssize_t count = 0, i = 0;
    while (i < n && (limit < 0 || count < limit)) {
        Py_ssize_t start = i;
        while (i < n && s[i] != ' ')
            i++;
        if (i > start) {
            if (count == room)
                return -1;
            spans[count].start = s + start;
            spans[count].size = i - start;
            count++;
        }
        i++;
    }
    return count;
}

static Py_ssize_t
count_words(const char *s, Py_ssize_t n, Py_ssize_t limit)
{
    Py_ssize_t count = 0, i = 0;
    while (i < n && count < limit) {
        Py_ssize_t start = i;
        while (i < n && s[i] != ' ')
            i++;
        if (i > start)
            count++;
        i++;
    }
    return count;
}

/* ---------------------------------------------------------------- MinHash signatures */

static int
compare_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static inline uint32_t
fmix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

/* Where the compiler can make a function for the running CPU's vector instructions and pick
 * it at load (GCC with glibc, through ifunc): the MinHash loop below, 8 values at a time with
 * AVX2, took a fifth of the time filing an item took (a multiply and a min for each of 128
 * permutations and each of some 60 shingles), and baseline x86-64 has no 32-bit vector multiply
 * or unsigned min. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
#define CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CPU_CLONES
#endif

/* For each permutation p, the least a[p] * h + b[p] (mod 2**32) over the hashes: the
 * permutations inner, so the loop is a vector one. */
static CPU_CLONES void
minhash_least(const uint32_t *hashes, Py_ssize_t count, const uint32_t *a, const uint32_t *b,
              Py_ssize_t perms, uint32_t *least)
{
    for (Py_ssize_t p = 0; p < perms; p++)
        least[p] = UINT32_MAX;
    for (Py_ssize_t i = 0; i < count; i++) {
        uint32_t h = hashes[i];
        for (Py_ssize_t p = 0; p < perms; p++) {
            uint32_t v = a[p] * h + b[p];
            least[p] = v < least[p] ? v : least[p];
        }
    }
}

/* signature(title, summary, content, limit, short, a, b, min_shingles) -> bytes | None
 *
 * An item's MinHash signature, as aggregator.process.dedupe's `shingles` and `_minhash_runs`
 * make it, from its folded title, summary and content: the words are the title's and the first
 * `limit` of the summary's, or of the content's where the summary has fewer than `short` and the
 * content more; the shingles are the crc32 of each pair of neighbouring words joined by a space
 * (of each word where there is only one); each of them premixed with MurmurHash3's finaliser,
 * then for each permutation (a, b) the least a * h + b (mod 2**32), as little-endian uint32.
 * None where there are fewer than `min_shingles` distinct shingles. */
static PyObject *
signature(PyObject *module, PyObject *args)
{
    PyObject *title, *summary, *content;
    Py_ssize_t limit, shortest, min_shingles;
    Py_buffer a, b;
    if (!PyArg_ParseTuple(args, "UUUnny*y*n", &title, &summary, &content, &limit, &shortest,
                          &a, &b, &min_shingles))
        return NULL;
    PyObject *result = NULL;
    Span *spans = NULL;
    uint32_t *hashes = NULL, *least = NULL;
    if (a.len != b.len || a.len % 4 != 0) {
        PyErr_SetString(PyExc_ValueError, "signature(): a and b must be uint32 arrays alike");
        goto done;
    }
    Py_ssize_t title_size, summary_size, content_size;
    const char *t = PyUnicode_AsUTF8AndSize(title, &title_size);
    const char *s = t ? PyUnicode_AsUTF8AndSize(summary, &summary_size) : NULL;
    const char *c = s ? PyUnicode_AsUTF8AndSize(content, &content_size) : NULL;
    if (c == NULL)
        goto done;
    if (limit < 0 || shortest < 0 || min_shingles < 0) {
        PyErr_SetString(PyExc_ValueError, "signature(): limit, short and min_shingles are counts");
        goto done;
    }
    const char *body = s;
    Py_ssize_t body_size = summary_size;
    Py_ssize_t body_words = count_words(s, summary_size, limit);
    if (body_words < shortest && count_words(c, content_size, limit) > body_words) {
        body = c;
        body_size = content_size;
    }
    /* a word takes at least two bytes of text (itself and a space), the last one */
    Py_ssize_t body_room = (body_size + 2) / 2;
    Py_ssize_t room = (title_size + 2) / 2 + (limit < body_room ? limit : body_room) + 1;
    spans = PyMem_New(Span, room);
    hashes = PyMem_New(uint32_t, room);
    if (spans == NULL || hashes == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t count = split_words(t, title_size, -1, spans, room);
    Py_ssize_t more = count < 0 ? -1 : split_words(body, body_size, limit, spans + count,
                                                     room - count);
    if (more < 0) {
        PyErr_SetString(PyExc_RuntimeError, "signature(): more words than room for them");
        goto done;
    }
    count += more;
    Py_ssize_t made = 0;
    if (count < 2) {
        for (Py_ssize_t i = 0; i < count; i++)
            hashes[made++] = crc32_update(0, (const unsigned char *)spans[i].start,
                                          spans[i].size);
    }
    else {
        static const unsigned char space = ' ';
        for (Py_ssize_t i = 0; i + 1 < count; i++) {
            const char *first = spans[i].start, *second = spans[i + 1].start;
            if (first + spans[i].size + 1 == second && first[spans[i].size] == ' ') {
                /* the two words as the text has them, a space between: in one go */
                hashes[made++] = crc32_update(0, (const unsigned char *)first,
                                              spans[i].size + 1 + spans[i + 1].size);
                continue;
            }
            uint32_t crc = crc32_update(0, (const unsigned char *)first, spans[i].size);
            crc = crc32_update(crc, &space, 1);
            hashes[made++] = crc32_update(crc, (const unsigned char *)second,
                                          spans[i + 1].size);
        }
    }
    /* A repeated shingle leaves every least value as it is: they are only counted, up to
     * `min_shingles` (sorting them to drop the repeats cost more than the rest of the
     * signature's loop), and all go through it. */
    Py_ssize_t distinct = made;
    if (min_shingles <= 16) {
        uint32_t seen[16];
        Py_ssize_t held = 0;
        for (Py_ssize_t i = 0; i < made && held < min_shingles; i++) {
            Py_ssize_t k = 0;
            while (k < held && seen[k] != hashes[i])
                k++;
            if (k == held)
                seen[held++] = hashes[i];
        }
        if (held < min_shingles)
            distinct = held;
    }
    else {
        uint32_t *sorted = PyMem_New(uint32_t, made + 1);
        if (sorted == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        memcpy(sorted, hashes, made * sizeof(uint32_t));
        qsort(sorted, made, sizeof(uint32_t), compare_u32);
        distinct = 0;
        for (Py_ssize_t i = 0; i < made; i++)
            distinct += i == 0 || sorted[i] != sorted[i - 1];
        PyMem_Free(sorted);
    }
    if (distinct < min_shingles) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    for (Py_ssize_t i = 0; i < made; i++)
        hashes[i] = fmix32(hashes[i]);
    Py_ssize_t perms = a.len / 4;
    /* the permutations (native order, as numpy gave them) and the least values, aligned */
    least = PyMem_New(uint32_t, 3 * perms + 1);
    if (least == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    uint32_t *ma = least + perms, *mb = ma + perms;
    memcpy(ma, a.buf, 4 * perms);
    memcpy(mb, b.buf, 4 * perms);
    minhash_least(hashes, made, ma, mb, perms, least);
    result = PyBytes_FromStringAndSize(NULL, perms * 4);
    if (result == NULL)
        goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    for (Py_ssize_t p = 0; p < perms; p++) {
        out[4 * p] = (unsigned char)least[p];
        out[4 * p + 1] = (unsigned char)(least[p] >> 8);
        out[4 * p + 2] = (unsigned char)(least[p] >> 16);
        out[4 * p + 3] = (unsigned char)(least[p] >> 24);
    }
done:
    PyMem_Free(spans);
    PyMem_Free(hashes);
    PyMem_Free(least);
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    return result;
}

/* ---------------------------------------------------------------- the words that start terms */

/* A set of folded words, some with `*` standing for any letters: the first words of a term
 * index's terms. Literal words go into an open-addressing hash table; words with `*` are kept
 * as their parts and tried in turn (an editor writes a few). */
typedef struct {
    Py_ssize_t start, size; /* in the pool */
} Piece;

typedef struct {
    Py_ssize_t first, count; /* parts, in `parts` */
} Wild;

typedef struct {
    PyObject_HEAD
    char *pool;
    Py_ssize_t pool_size;
    Piece *literals;  /* the hash table: size 0 is an empty slot */
    uint64_t *hashes; /* of each slot's word */
    Py_ssize_t mask;  /* slots - 1 */
    Piece *parts;
    Wild *wilds;
    Py_ssize_t wild_count;
    Py_ssize_t shortest_wild; /* the fewest bytes a wild word matches */
    /* The wild words by what a word must hold to match one (`wordset_holds` tries only those):
     * `order` lists them opening with a part by that part's first byte (`heads[b]` to
     * `heads[b + 1]`), then opening with `*` by their last part's last byte (`tails`), then
     * the rest (`*part*`), each with a byte of a part the word must hold (`needs`). With every
     * wild word tried, a word in none (most) cost two dozen tries. */
    Py_ssize_t *order;
    unsigned char *needs;
    Py_ssize_t heads[257], tails[257], rest;
} WordSet;

static inline uint64_t
fnv1a(const char *s, Py_ssize_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (Py_ssize_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int wordset_has_hashed(WordSet *self, const char *w, Py_ssize_t n, uint64_t h);

static int
wordset_has_literal(WordSet *self, const char *w, Py_ssize_t n)
{
    return self->mask >= 0 && wordset_has_hashed(self, w, n, fnv1a(w, n));
}

/* wordset_has_literal of a word whose fnv1a is `h`. */
static int
wordset_has_hashed(WordSet *self, const char *w, Py_ssize_t n, uint64_t h)
{
    if (self->mask < 0)
        return 0;
    for (Py_ssize_t slot = (Py_ssize_t)(h & self->mask);; slot = (slot + 1) & self->mask) {
        Piece *p = &self->literals[slot];
        if (p->size == 0)
            return 0;
        if (self->hashes[slot] == h && p->size == n && memcmp(self->pool + p->start, w, n) == 0)
            return 1;
    }
}

/* Whether a word is all of a wild word's parts in order, the first at its start and the last at
 * its end (a regex `part.*part.*part` matched in full): the middle parts taken leftmost first,
 * which finds a match wherever there is one. */
static int
wild_matches(WordSet *self, Wild *wild, const char *w, Py_ssize_t n)
{
    Piece *parts = self->parts + wild->first;
    Py_ssize_t last = wild->count - 1;
    const char *pool = self->pool;
    Py_ssize_t head = parts[0].size, tail = parts[last].size;
    if (n < head + tail)
        return 0;
    if (memcmp(w, pool + parts[0].start, head) != 0)
        return 0;
    if (memcmp(w + n - tail, pool + parts[last].start, tail) != 0)
        return 0;
    Py_ssize_t at = head, end = n - tail;
    for (Py_ssize_t k = 1; k < last; k++) {
        Py_ssize_t size = parts[k].size;
        const char *want = pool + parts[k].start;
        for (;;) {
            if (end - at < size)
                return 0;
            if (memcmp(w + at, want, size) == 0)
                break;
            at++;
        }
        at += size;
    }
    return 1;
}


/* An empty set, whatever the state: before `__init__` has run, or before it runs again. */
static void
wordset_clear(WordSet *self)
{
    PyMem_Free(self->pool);
    PyMem_Free(self->literals);
    PyMem_Free(self->hashes);
    PyMem_Free(self->parts);
    PyMem_Free(self->wilds);
    PyMem_Free(self->order);
    PyMem_Free(self->needs);
    self->order = NULL;
    self->needs = NULL;
    memset(self->heads, 0, sizeof(self->heads));
    memset(self->tails, 0, sizeof(self->tails));
    self->rest = 0;
    self->pool = NULL;
    self->literals = NULL;
    self->hashes = NULL;
    self->parts = NULL;
    self->wilds = NULL;
    self->pool_size = 0;
    self->mask = -1; /* no literal words: nothing is looked up */
    self->wild_count = 0;
    self->shortest_wild = PY_SSIZE_T_MAX;
}

static PyObject *
wordset_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    WordSet *self = (WordSet *)type->tp_alloc(type, 0);
    if (self != NULL)
        wordset_clear(self);
    return (PyObject *)self;
}

static int wordset_sort_wilds(WordSet *self);

static int
wordset_init(WordSet *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"words", NULL};
    PyObject *given;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O", keywords, &given))
        return -1;
    wordset_clear(self); /* a second __init__ starts afresh */
    PyObject *words = PySequence_Fast(given, "WordSet() takes a sequence of str");
    if (words == NULL)
        return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(words);
    Py_ssize_t pool_size = 0, literal_count = 0, wild_count = 0, part_count = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *word = PySequence_Fast_GET_ITEM(words, i);
        Py_ssize_t size;
        const char *s = PyUnicode_Check(word) ? PyUnicode_AsUTF8AndSize(word, &size) : NULL;
        if (s == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "WordSet() takes a sequence of str");
            Py_DECREF(words);
            return -1;
        }
        pool_size += size;
        if (memchr(s, '*', size) == NULL) {
            literal_count++;
            continue;
        }
        wild_count++;
        part_count++;
        for (Py_ssize_t k = 0; k < size; k++)
            part_count += s[k] == '*';
    }
    Py_ssize_t slots = 8;
    while (slots < 2 * literal_count)
        slots *= 2;
    self->pool = PyMem_Malloc(pool_size + 1);
    self->literals = PyMem_Calloc(slots, sizeof(Piece));
    self->hashes = PyMem_Calloc(slots, sizeof(uint64_t));
    self->parts = PyMem_Malloc(sizeof(Piece) * (part_count + 1));
    self->wilds = PyMem_Malloc(sizeof(Wild) * (wild_count + 1));
    if (!self->pool || !self->literals || !self->hashes || !self->parts || !self->wilds) {
        wordset_clear(self);
        Py_DECREF(words);
        PyErr_NoMemory();
        return -1;
    }
    self->mask = literal_count ? slots - 1 : -1;
    self->wild_count = 0;
    self->shortest_wild = PY_SSIZE_T_MAX;
    Py_ssize_t at = 0, parts = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t size;
        const char *s = PyUnicode_AsUTF8AndSize(PySequence_Fast_GET_ITEM(words, i), &size);
        memcpy(self->pool + at, s, size);
        if (memchr(s, '*', size) == NULL) {
            if (size == 0 || wordset_has_literal(self, s, size)) {
                at += size;
                continue; /* an empty word is no word; a repeated one is there already */
            }
            uint64_t h = fnv1a(s, size);
            Py_ssize_t slot = (Py_ssize_t)(h & self->mask);
            while (self->literals[slot].size)
                slot = (slot + 1) & self->mask;
            self->literals[slot].start = at;
            self->literals[slot].size = size;
            self->hashes[slot] = h;
            at += size;
            continue;
        }
        Wild *wild = &self->wilds[self->wild_count++];
        wild->first = parts;
        Py_ssize_t from = 0, least = 0;
        for (Py_ssize_t k = 0; k <= size; k++) {
            if (k == size || s[k] == '*') {
                self->parts[parts].start = at + from;
                self->parts[parts].size = k - from;
                least += k - from;
                parts++;
                from = k + 1;
            }
        }
        wild->count = parts - wild->first;
        if (least < 1)
            least = 1; /* a word is never empty */
        if (least < self->shortest_wild)
            self->shortest_wild = least;
        at += size;
    }
    self->pool_size = at;
    Py_DECREF(words);
    if (wordset_sort_wilds(self) < 0) {
        wordset_clear(self);
        return -1;
    }
    return 0;
}

static inline int wordset_holds_hashed(WordSet *self, const char *w, Py_ssize_t n, uint64_t h);

static inline int
wordset_holds(WordSet *self, const char *w, Py_ssize_t n)
{
    return wordset_holds_hashed(self, w, n, fnv1a(w, n));
}

/* wordset_holds of a word whose fnv1a is `h`. */
static inline int
wordset_holds_hashed(WordSet *self, const char *w, Py_ssize_t n, uint64_t h)
{
    if (wordset_has_hashed(self, w, n, h))
        return 1;
    if (n < self->shortest_wild)
        return 0;
    const Py_ssize_t *order = self->order;
    unsigned char first = (unsigned char)w[0], last = (unsigned char)w[n - 1];
    for (Py_ssize_t k = self->heads[first]; k < self->heads[first + 1]; k++)
        if (wild_matches(self, &self->wilds[order[k]], w, n))
            return 1;
    for (Py_ssize_t k = self->tails[last]; k < self->tails[last + 1]; k++)
        if (wild_matches(self, &self->wilds[order[k]], w, n))
            return 1;
    if (self->rest == self->wild_count)
        return 0;
    uint64_t held[4] = {1, 0, 0, 0}; /* the bytes the word holds (a need of byte 0: any word) */
    for (Py_ssize_t i = 0; i < n; i++)
        held[(unsigned char)w[i] >> 6] |= 1ull << (w[i] & 63);
    for (Py_ssize_t k = self->rest; k < self->wild_count; k++) {
        unsigned char need = self->needs[k];
        if ((held[need >> 6] >> (need & 63)) & 1 && wild_matches(self, &self->wilds[order[k]], w, n))
            return 1;
    }
    return 0;
}

/* `order`, `heads`, `tails`, `rest` and `needs` from the wild words (see WordSet): a counting
 * sort by each one's byte. */
static int
wordset_sort_wilds(WordSet *self)
{
    Py_ssize_t count = self->wild_count;
    self->order = PyMem_Malloc(sizeof(Py_ssize_t) * (count + 1));
    self->needs = PyMem_Malloc(count + 1);
    int *kinds = PyMem_Malloc(sizeof(int) * (count + 1));
    unsigned char *bytes = PyMem_Malloc(count + 1);
    if (!self->order || !self->needs || !kinds || !bytes) {
        PyMem_Free(kinds);
        PyMem_Free(bytes);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t head_counts[256] = {0}, tail_counts[256] = {0}, rest = 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        Piece *parts = self->parts + self->wilds[k].first;
        Py_ssize_t last = self->wilds[k].count - 1;
        if (parts[0].size) {
            kinds[k] = 0;
            bytes[k] = (unsigned char)self->pool[parts[0].start];
            head_counts[bytes[k]]++;
        } else if (parts[last].size) {
            kinds[k] = 1;
            bytes[k] = (unsigned char)self->pool[parts[last].start + parts[last].size - 1];
            tail_counts[bytes[k]]++;
        } else {
            kinds[k] = 2;
            bytes[k] = 0; /* no part: any word (never made: a term needs a letter) */
            for (Py_ssize_t p = 1; p < last; p++)
                if (parts[p].size) {
                    bytes[k] = (unsigned char)self->pool[parts[p].start];
                    break;
                }
            rest++;
        }
    }
    Py_ssize_t at = 0;
    for (int b = 0; b < 256; b++) {
        self->heads[b] = at;
        at += head_counts[b];
    }
    self->heads[256] = at;
    for (int b = 0; b < 256; b++) {
        self->tails[b] = at;
        at += tail_counts[b];
    }
    self->tails[256] = at;
    self->rest = at;
    Py_ssize_t next_head[256], next_tail[256], next_rest = self->rest;
    memcpy(next_head, self->heads, sizeof(next_head));
    memcpy(next_tail, self->tails, sizeof(next_tail));
    for (Py_ssize_t k = 0; k < count; k++) {
        Py_ssize_t place = kinds[k] == 0   ? next_head[bytes[k]]++
                           : kinds[k] == 1 ? next_tail[bytes[k]]++
                                           : next_rest++;
        self->order[place] = k;
        self->needs[place] = bytes[k];
    }
    PyMem_Free(kinds);
    PyMem_Free(bytes);
    return 0;
}

/* WordSet.find(folded) -> list[tuple[int, str]]: each word of folded text (words joined by
 * single spaces) that is in the set, with its place (the words before it). */
static PyObject *wordset_find_in(WordSet *self, PyObject *folded);

static PyObject *
wordset_find(WordSet *self, PyObject *folded)
{
    if (str_argument(folded, "find") == NULL)
        return NULL;
    return wordset_find_in(self, folded);
}

/* find, of a ready str. */
static PyObject *
wordset_find_in(WordSet *self, PyObject *folded)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(folded, &n);
    if (s == NULL)
        return NULL;
    PyObject *found = PyList_New(0);
    if (found == NULL)
        return NULL;
    Py_ssize_t place = 0;
    for (Py_ssize_t i = 0; i < n;) {
        Py_ssize_t start = i;
        const char *space = memchr(s + i, ' ', n - i);
        i = space ? space - s : n;
        if (i > start) {
            if (wordset_holds(self, s + start, i - start)) {
                PyObject *word = PyUnicode_DecodeUTF8(s + start, i - start, NULL);
                PyObject *pair = word ? Py_BuildValue("(nN)", place, word) : NULL;
                if (pair == NULL || PyList_Append(found, pair) < 0) {
                    Py_XDECREF(pair);
                    Py_DECREF(found);
                    return NULL;
                }
                Py_DECREF(pair);
            }
            place++;
        }
        i++;
    }
    return found;
}

/* For plain ASCII text: fold_ascii of it (into *folded) and `find` of that (into *found, NULL
 * where no word is in the set), in one pass: each word lowered, hashed and looked up as it is
 * written out. 0, or -1 with an exception. */
static int
fold_find_ascii(WordSet *self, PyObject *text, PyObject **folded, PyObject **found)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    const unsigned char *s = PyUnicode_1BYTE_DATA(text);
    char small[1024];
    char *out = n <= (Py_ssize_t)sizeof(small) ? small : PyMem_Malloc(n); /* folding never grows */
    *folded = *found = NULL;
    if (out == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t at = 0, place = 0;
    for (Py_ssize_t i = 0; i < n;) {
        if (!ascii_word_char(s[i])) {
            i++;
            continue;
        }
        if (at)
            out[at++] = ' ';
        Py_ssize_t start = at;
        uint64_t h = 1469598103934665603ull; /* fnv1a, as the word is written */
        for (; i < n && ascii_word_char(s[i]); i++) {
            unsigned char c = s[i];
            c = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
            out[at++] = (char)c;
            h = (h ^ c) * 1099511628211ull;
        }
        if (wordset_holds_hashed(self, out + start, at - start, h)) {
            if (*found == NULL && (*found = PyList_New(0)) == NULL)
                goto fail;
            PyObject *word = PyUnicode_DecodeASCII(out + start, at - start, NULL);
            PyObject *pair = word ? Py_BuildValue("(nN)", place, word) : NULL;
            if (pair == NULL || PyList_Append(*found, pair) < 0) {
                Py_XDECREF(pair);
                goto fail;
            }
            Py_DECREF(pair);
        }
        place++;
    }
    *folded = PyUnicode_DecodeASCII(out, at, NULL);
    if (*folded == NULL)
        goto fail;
    if (out != small)
        PyMem_Free(out);
    return 0;
fail:
    Py_CLEAR(*found);
    if (out != small)
        PyMem_Free(out);
    return -1;
}

/* WordSet.find_fields(fields, runs, fold, limit, marks, needs=None) -> [(index, [(place,
 * word)])] | None: for each field (text.Field: its `text`, and its `folded` where made already)
 * with text, its folded words as text.folded_words makes them (fold_ascii, or fold_words with
 * these arguments), kept as its `folded` (in its __dict__, as its cached property would), and
 * `find` of them, for the fields holding a word of the set (most hold none). A field cost half a
 * dozen Python calls this way, and an item has five to ten. `needs`: None where any field's
 * text holds one as caseless_holds looks (its regex terms may match: they are searched a field
 * at a time, by the caller). */
static PyObject *
wordset_find_fields(WordSet *self, PyObject *args)
{
    static PyObject *text_name = NULL, *folded_name = NULL;
    PyObject *fields, *runs, *fold, *needs = Py_None, *seq = NULL, *result = NULL;
    PyObject *need_seq = NULL, *const *need_items = NULL;
    Py_ssize_t limit, need_count = 0, room = 0;
    unsigned char *buffer = NULL;
    Py_buffer marks;
    if (!PyArg_ParseTuple(args, "OO!Ony*|O:find_fields", &fields, &PyDict_Type, &runs, &fold,
                          &limit, &marks, &needs))
        return NULL;
    if (needs != Py_None) {
        need_seq = PySequence_Tuple(needs);
        if (need_seq == NULL)
            goto done;
        need_count = PyTuple_GET_SIZE(need_seq);
        need_items = &PyTuple_GET_ITEM(need_seq, 0);
        if (check_needs(need_items, need_count) < 0)
            goto done;
    }
    if (text_name == NULL && (text_name = PyUnicode_InternFromString("text")) == NULL)
        goto done;
    if (folded_name == NULL && (folded_name = PyUnicode_InternFromString("folded")) == NULL)
        goto done;
    if (marks.len % 8) {
        PyErr_SetString(PyExc_ValueError, "find_fields: marks must be pairs of uint32");
        goto done;
    }
    /* a tuple of its own: `fold` and a field's `text` run Python code, which may change a list */
    seq = PySequence_Tuple(fields);
    if (seq == NULL || (result = PyList_New(0)) == NULL)
        goto done;
    Py_ssize_t count = PyTuple_GET_SIZE(seq);
    PyObject **items = &PyTuple_GET_ITEM(seq, 0);
    for (Py_ssize_t k = 0; k < count && need_seq != NULL; k++) { /* the needs first */
        PyObject *text = PyObject_GetAttr(items[k], text_name);
        int held = text ? caseless_text_holds(text, need_items, need_count, &buffer, &room) : -1;
        Py_XDECREF(text);
        if (held < 0)
            goto fail;
        if (held) {
            Py_CLEAR(result);
            result = Py_NewRef(Py_None);
            goto done;
        }
    }
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *dict = PyObject_GenericGetDict(items[k], NULL);
        if (dict == NULL)
            goto fail;
        PyObject *folded = PyDict_GetItemWithError(dict, folded_name); /* borrowed */
        if (folded != NULL)
            Py_INCREF(folded);
        else if (PyErr_Occurred()) {
            Py_DECREF(dict);
            goto fail;
        } else {
            PyObject *text = PyObject_GetAttr(items[k], text_name);
            if (text == NULL || !PyUnicode_Check(text) || ensure_ready(text) < 0) {
                if (text != NULL && !PyErr_Occurred())
                    PyErr_SetString(PyExc_TypeError, "find_fields: a field's text must be a str");
                Py_XDECREF(text);
                Py_DECREF(dict);
                goto fail;
            }
            if (PyUnicode_IS_ASCII(text)) { /* (most fields) folded and searched at once */
                PyObject *words;
                int failed = fold_find_ascii(self, text, &folded, &words);
                Py_DECREF(text);
                if (failed < 0 || PyDict_SetItem(dict, folded_name, folded) < 0) {
                    Py_XDECREF(folded);
                    Py_XDECREF(words);
                    Py_DECREF(dict);
                    goto fail;
                }
                Py_DECREF(dict);
                Py_DECREF(folded);
                if (words == NULL)
                    continue;
                PyObject *entry = Py_BuildValue("(nN)", k, words);
                if (entry == NULL || PyList_Append(result, entry) < 0) {
                    Py_XDECREF(entry);
                    goto fail;
                }
                Py_DECREF(entry);
                continue;
            }
            folded = fold_other_text(text, runs, fold, limit, (const uint32_t *)marks.buf,
                                     marks.len / 8);
            Py_DECREF(text);
            if (folded == NULL || PyDict_SetItem(dict, folded_name, folded) < 0) {
                Py_XDECREF(folded);
                Py_DECREF(dict);
                goto fail;
            }
        }
        Py_DECREF(dict);
        if (ensure_ready(folded) < 0 || !PyUnicode_Check(folded)) {
            Py_DECREF(folded);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "find_fields: a field's folded must be a str");
            goto fail;
        }
        if (PyUnicode_GET_LENGTH(folded) == 0) {
            Py_DECREF(folded);
            continue;
        }
        PyObject *found = wordset_find_in(self, folded);
        Py_DECREF(folded);
        if (found == NULL)
            goto fail;
        if (PyList_GET_SIZE(found) == 0) {
            Py_DECREF(found);
            continue;
        }
        PyObject *entry = Py_BuildValue("(nN)", k, found);
        if (entry == NULL || PyList_Append(result, entry) < 0) {
            Py_XDECREF(entry);
            goto fail;
        }
        Py_DECREF(entry);
    }
    goto done;
fail:
    Py_CLEAR(result);
done:
    Py_XDECREF(seq);
    Py_XDECREF(need_seq);
    PyMem_Free(buffer);
    PyBuffer_Release(&marks);
    return result;
}

static inline int
is_word_char(Py_UCS4 c)
{
    /* \w as the re module has it for str: letters and digits of any script, and the underscore */
    if (c < 128)
        return ascii_word_char((unsigned char)c) || c == '_';
    return Py_UNICODE_ISALNUM(c);
}

/* WordSet.find_written(text, start=0, end=len(text)) -> list[str]: in text as written, between
 * start and end, each word spelt in ASCII letters and digits (a run of them with no letter, digit
 * or underscore of any script on either side) whose lowered spelling is in the set, as written:
 * what the one-word terms' regex over written text finds (terms.py, `_written_scanner`). */
static PyObject *
wordset_find_written(WordSet *self, PyObject *args)
{
    PyObject *text;
    Py_ssize_t start = 0, end = PY_SSIZE_T_MAX;
    if (!PyArg_ParseTuple(args, "U|nn", &text, &start, &end))
        return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (end > n)
        end = n;
    if (start < 0)
        start = 0;
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    PyObject *found = PyList_New(0);
    if (found == NULL)
        return NULL;
    char lowered[64];
    for (Py_ssize_t i = start; i < end;) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (!(c < 128 && ascii_word_char((unsigned char)c))) {
            i++;
            continue;
        }
        Py_ssize_t first = i;
        while (i < end && (c = PyUnicode_READ(kind, data, i)) < 128 &&
               ascii_word_char((unsigned char)c))
            i++;
        Py_ssize_t size = i - first;
        /* a word goes on where a letter, digit or underscore of any script touches the run
         * (before it even outside `start`, as the regex's lookbehind sees; `end` ends the text) */
        if (first > 0 && is_word_char(PyUnicode_READ(kind, data, first - 1)))
            continue;
        if (i < end && is_word_char(PyUnicode_READ(kind, data, i)))
            continue;
        char *low = size <= (Py_ssize_t)sizeof(lowered) ? lowered : PyMem_Malloc(size);
        if (low == NULL) {
            Py_DECREF(found);
            return PyErr_NoMemory();
        }
        for (Py_ssize_t k = 0; k < size; k++) {
            Py_UCS4 l = PyUnicode_READ(kind, data, first + k);
            low[k] = (char)((l >= 'A' && l <= 'Z') ? l + 32 : l);
        }
        int held = wordset_holds(self, low, size);
        if (low != lowered)
            PyMem_Free(low);
        if (!held)
            continue;
        PyObject *word = PyUnicode_Substring(text, first, i);
        if (word == NULL || PyList_Append(found, word) < 0) {
            Py_XDECREF(word);
            Py_DECREF(found);
            return NULL;
        }
        Py_DECREF(word);
    }
    return found;
}

/* WordSet.holds(word) -> bool */
static PyObject *
wordset_holds_py(WordSet *self, PyObject *word)
{
    Py_ssize_t n;
    const char *s = PyUnicode_Check(word) ? PyUnicode_AsUTF8AndSize(word, &n) : NULL;
    if (s == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "holds() takes a str");
        return NULL;
    }
    return PyBool_FromLong(n > 0 && wordset_holds(self, s, n));
}

static void
wordset_dealloc(WordSet *self)
{
    wordset_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef wordset_methods[] = {
    {"find", (PyCFunction)wordset_find, METH_O,
     "find(folded) -> [(place, word)]: the words of folded text in the set"},
    {"find_fields", (PyCFunction)wordset_find_fields, METH_VARARGS,
     "find_fields(fields, runs, fold, limit, marks, needs=None) -> [(index, find(folded))] | None"},
    {"find_written", (PyCFunction)wordset_find_written, METH_VARARGS,
     "find_written(text, start=0, end=len(text)) -> [word]: ASCII words of written text in the set"},
    {"holds", (PyCFunction)wordset_holds_py, METH_O, "holds(word) -> whether it is in the set"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject WordSetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aggregator._speedups.WordSet",
    .tp_basicsize = sizeof(WordSet),
    .tp_dealloc = (destructor)wordset_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "WordSet(words): folded words, `*` standing for any letters",
    .tp_methods = wordset_methods,
    .tp_init = (initproc)wordset_init,
    .tp_new = wordset_new,
};

/* ---------------------------------------------------------------- HTML to text */

static inline int
is_space(Py_UCS4 c)
{
    return Py_UNICODE_ISSPACE(c);
}

static inline int
is_ascii_letter(Py_UCS4 c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static inline int
is_ascii_alnum(Py_UCS4 c)
{
    return is_ascii_letter(c) || (c >= '0' && c <= '9');
}

/* The length of the tag at `i` as sanitize.py's _TAG regex matches it, or 0 where it does not:
 *     </?[A-Za-z][A-Za-z0-9]*(?:\s+[^\s"'<>/=]+(?:="[^"]*")?)*\s*\/?>
 * Matched greedily without backtracking, which finds the same match: an attribute name stops only
 * where what follows cannot go on one (a space, a quote, <, >, / or =), and a value can only open
 * with the = the name stops at. */
static Py_ssize_t
tag_at(int kind, const void *data, Py_ssize_t n, Py_ssize_t i)
{
    Py_ssize_t at = i + 1;
    if (at < n && PyUnicode_READ(kind, data, at) == '/')
        at++;
    if (at >= n || !is_ascii_letter(PyUnicode_READ(kind, data, at)))
        return 0;
    while (at < n && is_ascii_alnum(PyUnicode_READ(kind, data, at)))
        at++;
    for (;;) { /* (?:\s+NAME(?:="...")?)* */
        Py_ssize_t pos = at;
        if (pos >= n || !is_space(PyUnicode_READ(kind, data, pos)))
            break;
        while (pos < n && is_space(PyUnicode_READ(kind, data, pos)))
            pos++;
        Py_ssize_t name = pos;
        while (pos < n) {
            Py_UCS4 c = PyUnicode_READ(kind, data, pos);
            if (is_space(c) || c == '"' || c == '\'' || c == '<' || c == '>' || c == '/' || c == '=')
                break;
            pos++;
        }
        if (pos == name)
            break;
        if (pos + 1 < n && PyUnicode_READ(kind, data, pos) == '=' &&
            PyUnicode_READ(kind, data, pos + 1) == '"') {
            Py_ssize_t close = pos + 2;
            while (close < n && PyUnicode_READ(kind, data, close) != '"')
                close++;
            if (close < n)
                pos = close + 1;
        }
        at = pos;
    }
    while (at < n && is_space(PyUnicode_READ(kind, data, at)))
        at++;
    if (at < n && PyUnicode_READ(kind, data, at) == '/')
        at++;
    if (at < n && PyUnicode_READ(kind, data, at) == '>')
        return at + 1 - i;
    return 0;
}

/* strip_tags(fragment, special) -> str | None: sanitize.py's `_strip`: the fragment with its
 * plain tags removed, or None where only a parser can say what its text is: a NUL, a tag (or end
 * tag) named as one of `special` (a WordSet of lowered names), or markup left once the tags are
 * gone (`<` before a letter, /, ! or ?). */
static PyObject *
strip_tags(PyObject *module, PyObject *args)
{
    PyObject *fragment;
    WordSet *special;
    if (!PyArg_ParseTuple(args, "UO!", &fragment, &WordSetType, &special))
        return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(fragment);
    int kind = PyUnicode_KIND(fragment);
    const void *data = PyUnicode_DATA(fragment);
    /* A fragment of one-byte characters (most: ASCII and Latin-1) is scanned with memchr from
     * one `<` to the next, a character at a time only inside tags. */
    const unsigned char *bytes = kind == PyUnicode_1BYTE_KIND ? data : NULL;
    if (bytes != NULL && memchr(bytes, 0, (size_t)n) != NULL)
        Py_RETURN_NONE;
    /* first pass: a NUL, or a special name anywhere (_NAME.findall): the parser's */
    char name[16];
    for (Py_ssize_t i = 0; i < n; i++) {
        if (bytes != NULL) {
            const unsigned char *next = memchr(bytes + i, '<', (size_t)(n - i));
            if (next == NULL)
                break;
            i = next - bytes;
        }
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c == 0)
            Py_RETURN_NONE;
        if (c != '<')
            continue;
        Py_ssize_t at = i + 1;
        if (at < n && PyUnicode_READ(kind, data, at) == '/')
            at++;
        if (at >= n || !is_ascii_letter(PyUnicode_READ(kind, data, at)))
            continue;
        Py_ssize_t size = 0;
        int fits = 1;
        while (at < n && is_ascii_alnum(c = PyUnicode_READ(kind, data, at))) {
            if (size < (Py_ssize_t)sizeof(name))
                name[size++] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
            else
                fits = 0; /* longer than any special name */
            at++;
        }
        if (fits && wordset_has_literal(special, name, size))
            Py_RETURN_NONE;
    }
    /* second pass: the text between tags, into a buffer of the fragment's kind */
    PyObject *result = NULL;
    char *out = PyMem_Malloc(n * kind + 1);
    if (out == NULL)
        return PyErr_NoMemory();
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < n;) {
        if (bytes != NULL) { /* the text up to the next `<`, copied whole */
            const unsigned char *next = memchr(bytes + i, '<', (size_t)(n - i));
            Py_ssize_t end = next == NULL ? n : next - bytes;
            memcpy(out + kept, bytes + i, (size_t)(end - i));
            kept += end - i;
            i = end;
            if (i >= n)
                break;
        }
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c == '<') {
            Py_ssize_t size = tag_at(kind, data, n, i);
            if (size) {
                i += size;
                continue;
            }
        }
        PyUnicode_WRITE(kind, out, kept, c);
        kept++;
        i++;
    }
    /* markup left (_MARKUP: `<` before a letter, /, ! or ?): the parser's */
    for (Py_ssize_t i = 0; i + 1 < kept; i++) {
        if (bytes != NULL) {
            const char *next = memchr(out + i, '<', (size_t)(kept - 1 - i));
            if (next == NULL)
                break;
            i = next - out;
        }
        if (PyUnicode_READ(kind, out, i) != '<')
            continue;
        Py_UCS4 next = PyUnicode_READ(kind, out, i + 1);
        if (is_ascii_letter(next) || next == '/' || next == '!' || next == '?') {
            result = Py_NewRef(Py_None);
            goto done;
        }
    }
    result = PyUnicode_FromKindAndData(kind, out, kept); /* narrowed where it can be */
done:
    PyMem_Free(out);
    return result;
}

/* collapse_spaces(text) -> str: " ".join(text.split()), whitespace as str.split() has it. */
static PyObject *
collapse_spaces(PyObject *module, PyObject *text)
{
    if (str_argument(text, "collapse_spaces") == NULL)
        return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    if (kind == PyUnicode_1BYTE_KIND && PyUnicode_CheckExact(text)) {
        /* Most text is already as collapsed (single spaces between words, none at either end):
         * it is its own answer, found in a look at each byte, where making it anew cost a
         * fiftieth of filing an item. Every space below 0x21 but 0x85 and 0xA0. */
        const unsigned char *b = data;
        int clean = n == 0 || (!is_space(b[0]) && !is_space(b[n - 1]));
        for (Py_ssize_t i = 0; clean && i < n; i++) {
            unsigned char c = b[i];
            if (c > ' ' && c != 0x85 && c != 0xA0)
                continue;
            /* (a space is never last here: the next byte is there) */
            clean = c == ' ' ? !is_space(b[i + 1]) : !is_space(c);
        }
        if (clean)
            return Py_NewRef(text);
    }
    char *out = PyMem_Malloc(n * kind + 1);
    if (out == NULL)
        return PyErr_NoMemory();
    Py_ssize_t kept = 0;
    int pending = 0; /* a space is owed before the next word */
    const unsigned char *bytes = kind == PyUnicode_1BYTE_KIND ? data : NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = bytes != NULL ? bytes[i] : PyUnicode_READ(kind, data, i);
        if (is_space(c)) {
            pending = kept > 0;
            continue;
        }
        if (pending) {
            PyUnicode_WRITE(kind, out, kept++, ' ');
            pending = 0;
        }
        PyUnicode_WRITE(kind, out, kept++, c);
    }
    PyObject *result = PyUnicode_FromKindAndData(kind, out, kept); /* narrowed where it can be */
    PyMem_Free(out);
    return result;
}

/* ---------------------------------------------------------------- the module */

/* ---------------------------------------------------------------- a headline's numbers */

static inline int
re_digit(Py_UCS4 c)
{
    return c < 128 ? (c >= '0' && c <= '9') : Py_UNICODE_ISDECIMAL(c);
}

static inline int
re_word(Py_UCS4 c)
{
    return c < 128 ? ascii_word_char((unsigned char)c) || c == '_' : Py_UNICODE_ISALNUM(c);
}

/* The next number at or after *at in text (as fingerprint.py's _NUMBER finds them, below) as
 * [*start, *end), *at moved past it; 0 when there is none. The regex, greedy, ends after its
 * last group of digits where no letter follows; where one does, it gives the last group back
 * and ends at that group's separator (a shorter group ends at a digit, which is a letter of
 * \w), and with no group it fails there. */
static int
next_number(int kind, const void *data, Py_ssize_t n, Py_ssize_t *at, Py_ssize_t *start,
            Py_ssize_t *end)
{
    for (Py_ssize_t i = *at; i < n; i++) {
        if (!re_digit(PyUnicode_READ(kind, data, i)))
            continue;
        if (i > 0) {
            Py_UCS4 before = PyUnicode_READ(kind, data, i - 1);
            if (before == '.' || before == ',' || re_word(before))
                continue;
        }
        Py_ssize_t stop = i + 1, last_group = -1;
        while (stop < n && re_digit(PyUnicode_READ(kind, data, stop)))
            stop++;
        for (;;) { /* (?:[.,]\d+)* */
            if (stop + 1 >= n)
                break;
            Py_UCS4 mark = PyUnicode_READ(kind, data, stop);
            if ((mark != '.' && mark != ',') || !re_digit(PyUnicode_READ(kind, data, stop + 1)))
                break;
            last_group = stop;
            stop += 2;
            while (stop < n && re_digit(PyUnicode_READ(kind, data, stop)))
                stop++;
        }
        if (stop < n && re_word(PyUnicode_READ(kind, data, stop))) {
            if (last_group < 0) {
                i = stop - 1; /* each digit after the first follows a digit: none starts one */
                continue;
            }
            stop = last_group;
        }
        *start = i;
        *end = *at = stop;
        return 1;
    }
    *at = n;
    return 0;
}

/* numbers(title) -> [str]: what fingerprint.py's _NUMBER finds (re.findall), a number not inside
 * a word or another number: `\d(?<![\w.,]\d)\d*(?:[.,]\d+)*(?!\w)`, as numbers_bytes finds
 * them (tests hold the two to the regex). A headline was searched a character at a time, and
 * most of the digits news headlines hold are in no number. */
static PyObject *
numbers(PyObject *module, PyObject *text)
{
    if (str_argument(text, "numbers") == NULL)
        return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), at = 0, start, end;
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    PyObject *found = PyList_New(0);
    if (found == NULL)
        return NULL;
    while (next_number(kind, data, n, &at, &start, &end)) {
        PyObject *number = PyUnicode_Substring(text, start, end);
        if (number == NULL || PyList_Append(found, number) < 0) {
            Py_XDECREF(number);
            Py_DECREF(found);
            return NULL;
        }
        Py_DECREF(number);
    }
    return found;
}

static int
compare_u32_values(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* numbers_bytes(title, count) -> bytes: fingerprint.py's _numbers_bytes, its title_numbers
 * packed: each number's digits (of any script, as ASCII; commas dropped, points kept) hashed by
 * crc32 (0 made 1), the `count` lowest distinct, as little-endian uint32, zeros after. */
static PyObject *
numbers_bytes(PyObject *module, PyObject *args)
{
    PyObject *text;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "Un:numbers_bytes", &text, &count))
        return NULL;
    if (ensure_ready(text) < 0)
        return NULL;
    if (count < 0 || count > 1024) {
        PyErr_SetString(PyExc_ValueError, "numbers_bytes: count out of range");
        return NULL;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), at = 0, start, end, made = 0;
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    uint32_t *hashes = NULL, packed[1024]; /* the first `count` zeroed below */
    unsigned char digits[64];
    while (next_number(kind, data, n, &at, &start, &end)) {
        if (hashes == NULL && (hashes = PyMem_Malloc(sizeof(uint32_t) * (n / 2 + 1))) == NULL)
            return PyErr_NoMemory();
        uint32_t crc = 0;
        Py_ssize_t size = 0;
        for (Py_ssize_t i = start; i < end; i++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            if (c == ',')
                continue;
            digits[size++] = c == '.' ? '.' : (unsigned char)('0' + Py_UNICODE_TODECIMAL(c));
            if (size == sizeof(digits)) {
                crc = crc32_update(crc, digits, size);
                size = 0;
            }
        }
        crc = crc32_update(crc, digits, size);
        hashes[made++] = crc ? crc : 1;
    }
    memset(packed, 0, sizeof(uint32_t) * count);
    if (made)
        qsort(hashes, made, sizeof(uint32_t), compare_u32_values);
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < made && kept < count; i++)
        if (kept == 0 || hashes[i] != packed[kept - 1])
            packed[kept++] = hashes[i];
    PyMem_Free(hashes);
    unsigned char out[4 * 1024];
    for (Py_ssize_t i = 0; i < count; i++) {
        uint32_t v = packed[i];
        out[4 * i] = v & 0xFF;
        out[4 * i + 1] = (v >> 8) & 0xFF;
        out[4 * i + 2] = (v >> 16) & 0xFF;
        out[4 * i + 3] = (v >> 24) & 0xFF;
    }
    return PyBytes_FromStringAndSize((const char *)out, 4 * count);
}

static PyMethodDef methods[] = {
    {"clean_simple", sanitize_clean_simple, METH_VARARGS,
     "clean_simple(fragment, allowed, generic, links, join, rel) -> what nh3 writes, or None"},
    {"json_string", json_string, METH_O,
     "json_string(text) -> text as json.dumps(text, ensure_ascii=False) writes it"},
    {"caseless_holds", caseless_holds, METH_VARARGS,
     "caseless_holds(texts, needs) -> whether a text's caseless form holds a need"},
    {"numbers", numbers, METH_O, "numbers(title) -> [str]: the numbers _NUMBER finds"},
    {"numbers_bytes", numbers_bytes, METH_VARARGS,
     "numbers_bytes(title, count) -> bytes: a headline's numbers hashed, packed"},
    {"not_xml", not_xml, METH_O,
     "not_xml(text) -> whether it holds a character XML cannot carry"},
    {"ascii_words_text", ascii_words_text, METH_VARARGS,
     "ascii_words_text(text, first, last) -> str | None: words first to last as written"},
    {"fold_words", fold_words, METH_VARARGS,
     "fold_words(text, runs, fold, limit, marks) -> str: folded words of any text"},
    {"words_text", words_text, METH_VARARGS,
     "words_text(text, first, last, count, marks, token_fold) -> str | None: a hit's words"},
    {"fold_ascii", fold_ascii, METH_O,
     "fold_ascii(text) -> the folded words of ASCII text, joined by spaces; None for other text"},
    {"strip_tags", strip_tags, METH_VARARGS,
     "strip_tags(fragment, special) -> the fragment without its plain tags, or None"},
    {"collapse_spaces", collapse_spaces, METH_O, "collapse_spaces(text) -> ' '.join(text.split())"},
    {"signature", signature, METH_VARARGS,
     "signature(title, summary, content, limit, short, a, b, min_shingles) -> bytes | None"},
    {"bloom_add", index_bloom_add, METH_VARARGS,
     "bloom_add(words, size, keys): set each key's two bits in a story index's filter"},
    {"lookup", index_lookup, METH_VARARGS,
     "lookup(query, words, size, bands, runs) -> (owners, slots): a batch's keys in the runs"},
    {"sort_pairs", index_sort_pairs, METH_VARARGS,
     "sort_pairs(keys, slots) -> (keys, slots): keys sorted, slots beside them, stable"},
    {"merge", index_merge, METH_VARARGS,
     "merge(keys, offsets, count, new_keys, new_slots, shift): sorted keys into a run in place"},
    {"verify", index_verify, METH_VARARGS,
     "verify(owners, slots, ...) -> [(query, item id, score)]: a batch's candidates scored"},
    {"within", index_within, METH_VARARGS,
     "within(keys, bands, ...) -> (pairs, compared): the items of a batch alike each other"},
    {"band_keys", index_band_keys, METH_VARARGS,
     "band_keys(sigs, width, bands, rows) -> bytes: each signature's band keys, uint32"},
    {"compare", index_compare, METH_VARARGS,
     "compare(a, b, perms, numbers) -> (equal, conflict): two fingerprints' values alike"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "aggregator._speedups",
    .m_doc = "Filing's per-item text work in C (see aggregator/speedups.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    crc_init();
    if (PyType_Ready(&WordSetType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "WordSet", (PyObject *)&WordSetType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
