/* The story index's per-batch work in C (aggregator/process/dedupe.py, `SimilarityIndex`): the
 * Bloom filter over band keys, looking a batch's keys up in the sorted runs, and merging sorted
 * keys into a run in place. The arrays stay numpy's, held by the Python code; these functions
 * read and write them through the buffer protocol. Each gives exactly what the numpy code it
 * stands in for gives (tests/test_speedups.py holds the two equal).
 *
 * Why: a batch of 25 items is about 1,000 band keys, and the numpy code made some 60 calls a
 * batch (a binary search per run, the filter's `bitwise_or.at`, the merges' blocks), each
 * cheap but each paying numpy's cost per call; and a binary search over a full run of millions
 * of keys missed the cache at most of its twenty steps. Here a run's fences (every STEP-th key,
 * a small array that stays in the cache) narrow each search to one block of the run first. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "_speedups.h"

#define MIX 0x9E3779B97F4A7C15ULL

/* A C-contiguous buffer of `itemsize`-byte items (0: 2 or 4), aligned to them, writable if
 * asked; read as flat. Only the size of its items is checked, not their type. */
static int
get_array(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, int writable, const char *what)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    int fits = itemsize ? view->itemsize == itemsize : (view->itemsize == 2 || view->itemsize == 4);
    if (!fits) {
        if (itemsize)
            PyErr_Format(PyExc_ValueError, "%s: an array of %zd-byte items was expected", what,
                         itemsize);
        else
            PyErr_Format(PyExc_ValueError, "%s: an array of 2- or 4-byte items was expected",
                         what);
        PyBuffer_Release(view);
        return -1;
    }
    if ((uintptr_t)view->buf % (uintptr_t)view->itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: the array is not aligned to its items", what);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* One array a function takes, for `get_arrays`. */
typedef struct {
    PyObject *obj;
    Py_buffer *view;
    Py_ssize_t itemsize;
    int writable;
    const char *what;
} Wanted;

/* Several arrays (`get_array` each): all of them, or none (those taken are given back). */
static int
get_arrays(const Wanted *wanted, int count)
{
    for (int i = 0; i < count; i++) {
        const Wanted *w = &wanted[i];
        if (get_array(w->obj, w->view, w->itemsize, w->writable, w->what) < 0) {
            while (i--)
                PyBuffer_Release(wanted[i].view);
            return -1;
        }
    }
    return 0;
}

/* The filter's word for a key and the three bits of it a key sets (as `_Bits._spots`): the high
 * half of a multiplicative hash scaled to the words, the low bits the bits. One memory access
 * a key where two bits anywhere in the filter took two (and 3.8% false positives at 8 bits a
 * key, where two bits gave 5%). */
static inline void
bloom_spot(uint32_t key, uint64_t size, uint64_t *word, uint64_t *mask)
{
    uint64_t mixed = (uint64_t)key * MIX;
    *word = ((mixed >> 32) * (size >> 6)) >> 32;
    *mask = (1ULL << (mixed & 63)) | (1ULL << ((mixed >> 6) & 63)) | (1ULL << ((mixed >> 12) & 63));
}

static inline int
bloom_holds(const uint64_t *words, uint64_t size, uint32_t key)
{
    uint64_t word, mask;
    bloom_spot(key, size, &word, &mask);
    return (words[word] & mask) == mask;
}

static int
check_size(Py_buffer *words, unsigned long long size)
{
    /* up to 2**32 bits (what `_Bits` caps a filter at), whole words */
    if (size == 0 || size % 64 || size > (unsigned long long)words->len * 8
        || size > (1ULL << 32)) {
        PyErr_SetString(PyExc_ValueError, "bloom: size out of range of its words");
        return -1;
    }
    return 0;
}

PyObject *
index_bloom_add(PyObject *module, PyObject *args)
{
    PyObject *words_obj, *keys_obj;
    unsigned long long size;
    if (!PyArg_ParseTuple(args, "OKO:bloom_add", &words_obj, &size, &keys_obj))
        return NULL;
    Py_buffer words, keys;
    Wanted wanted[] = {{words_obj, &words, 8, 1, "bloom_add words"},
                       {keys_obj, &keys, 4, 0, "bloom_add keys"}};
    if (get_arrays(wanted, 2) < 0)
        return NULL;
    if (check_size(&words, size) == 0) {
        uint64_t *w = (uint64_t *)words.buf;
        const uint32_t *k = (const uint32_t *)keys.buf;
        Py_ssize_t n = keys.len / 4;
        /* a chunk's words asked of memory before any is written (as `lookup` reads them): one
         * at a time, each a miss of a filter of megabytes, they followed one another */
        enum { CHUNK = 32 };
        uint64_t at[CHUNK], masks[CHUNK];
        for (Py_ssize_t start = 0; start < n; start += CHUNK) {
            Py_ssize_t count = n - start < CHUNK ? n - start : CHUNK;
            for (Py_ssize_t i = 0; i < count; i++) {
                bloom_spot(k[start + i], size, &at[i], &masks[i]);
                __builtin_prefetch(&w[at[i]], 1);
            }
            for (Py_ssize_t i = 0; i < count; i++)
                w[at[i]] |= masks[i];
        }
    }
    PyBuffer_Release(&words);
    PyBuffer_Release(&keys);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------- lookups */

typedef struct {
    Py_buffer keys, offsets, fences;
    int has_fences;
    Py_ssize_t count, fence_count, step;
    long long base;
} Run;

typedef struct {
    int64_t *owners;
    int32_t *slots;
    Py_ssize_t size, room;
} Found;

static inline int
found_add(Found *found, int64_t owner, int32_t slot)
{
    if (found->size == found->room) {
        Py_ssize_t room = found->room ? found->room * 2 : 256;
        int64_t *owners = PyMem_RawRealloc(found->owners, room * sizeof(int64_t));
        if (owners == NULL)
            return -1;
        found->owners = owners;
        int32_t *slots = PyMem_RawRealloc(found->slots, room * sizeof(int32_t));
        if (slots == NULL)
            return -1;
        found->slots = slots;
        found->room = room;
    }
    found->owners[found->size] = owner;
    found->slots[found->size] = slot;
    found->size++;
    return 0;
}

/* Which of `count` fences (at least one) a key spread evenly over 32 bits is near. */
static inline Py_ssize_t
fence_guess(uint32_t key, Py_ssize_t count)
{
    return (Py_ssize_t)(((uint64_t)key * (uint64_t)count) >> 32);
}

/* Where in a run the first key not below `key` must be: from its fences (every step-th key),
 * the one block of the run [*lo, *hi) they leave; the whole run where it has none. */
static inline void
narrow(const Run *run, uint32_t key, Py_ssize_t *lo, Py_ssize_t *hi)
{
    *lo = 0;
    *hi = run->count;
    if (!run->has_fences || run->fence_count == 0)
        return;
    const uint32_t *fences = (const uint32_t *)run->fences.buf;
    Py_ssize_t count = run->fence_count, a = 0, b = count;
    /* Band keys are hashes, spread evenly: a key's place is guessed from its value, and the
     * search widens from there (a few fences off, one or two cache lines), where a binary
     * search over every fence missed the cache a dozen times one after another once filing
     * had filled it between two batches. Keys bunched anyhow cost a search twice as long. */
    Py_ssize_t guess = fence_guess(key, count);
    if (fences[guess] < key) {
        Py_ssize_t step = 1, probe = guess + 1;
        a = guess + 1;
        while (probe < count && fences[probe] < key) {
            a = probe + 1;
            step *= 2;
            probe = a + step - 1;
        }
        b = probe < count ? probe : count; /* fences[b] >= key, or b is the end */
    }
    else {
        Py_ssize_t step = 1, probe = guess - 1;
        b = guess;
        while (probe >= 0 && fences[probe] >= key) {
            b = probe;
            step *= 2;
            probe = b - step;
        }
        a = probe >= 0 ? probe + 1 : 0; /* fences[a - 1] < key */
    }
    while (a < b) {
        Py_ssize_t m = a + (b - a) / 2;
        if (fences[m] < key)
            a = m + 1;
        else
            b = m;
    }
    /* keys[(a - 1) * step] < key <= keys[a * step] */
    *lo = a > 0 ? (a - 1) * run->step + 1 : 0;
    *hi = a * run->step < run->count ? a * run->step : run->count;
}

static inline Py_ssize_t
lower_bound(const uint32_t *keys, Py_ssize_t lo, Py_ssize_t hi, uint32_t key)
{
    while (lo < hi) {
        Py_ssize_t m = lo + (hi - lo) / 2;
        if (keys[m] < key)
            lo = m + 1;
        else
            hi = m;
    }
    return lo;
}

static void
release_runs(Run *runs, Py_ssize_t count)
{
    for (Py_ssize_t r = 0; r < count; r++) {
        PyBuffer_Release(&runs[r].keys);
        PyBuffer_Release(&runs[r].offsets);
        if (runs[r].has_fences)
            PyBuffer_Release(&runs[r].fences);
    }
}

/* A run given as (keys, offsets, count, base, fences or None, step). */
static int
read_run(PyObject *item, Run *run)
{
    PyObject *keys, *offsets, *fences;
    if (!PyArg_ParseTuple(item, "OOnLOn:lookup run", &keys, &offsets, &run->count, &run->base,
                          &fences, &run->step))
        return -1;
    if (get_array(keys, &run->keys, 4, 0, "lookup run keys") < 0)
        return -1;
    if (get_array(offsets, &run->offsets, 0, 0, "lookup run offsets") < 0) {
        PyBuffer_Release(&run->keys);
        return -1;
    }
    run->has_fences = 0;
    Py_ssize_t offset_count = run->offsets.len / run->offsets.itemsize;
    if (run->count < 0 || run->count > run->keys.len / 4 || run->count > offset_count) {
        PyErr_SetString(PyExc_ValueError, "lookup run: count beyond its arrays");
        goto fail;
    }
    if (run->base < 0 || run->base > INT32_MAX) { /* a slot is an int32: base plus offset */
        PyErr_SetString(PyExc_ValueError, "lookup run: base out of range");
        goto fail;
    }
    if (fences != Py_None) {
        if (get_array(fences, &run->fences, 4, 0, "lookup run fences") < 0)
            goto fail;
        run->has_fences = 1;
        run->fence_count = run->fences.len / 4;
        if (run->step < 1
            || run->fence_count != run->count / run->step + (run->count % run->step != 0)) {
            PyErr_SetString(PyExc_ValueError, "lookup run: fences do not fit the run");
            PyBuffer_Release(&run->fences);
            goto fail;
        }
    }
    return 0;
fail:
    PyBuffer_Release(&run->keys);
    PyBuffer_Release(&run->offsets);
    return -1;
}

/* lookup(query, words, size, bands, runs) -> (owners, slots): every (item of the batch, slot)
 * pair whose band key the filter may hold and a run holds, as the bytes of an int64 and an
 * int32 array, in no particular order. `query`: the batch's band keys, `bands` an item. */
PyObject *
index_lookup(PyObject *module, PyObject *args)
{
    PyObject *query_obj, *words_obj, *runs_obj;
    unsigned long long size;
    Py_ssize_t bands;
    PyObject *runs_given;
    if (!PyArg_ParseTuple(args, "OOKnO!:lookup", &query_obj, &words_obj, &size, &bands,
                          &PyList_Type, &runs_given))
        return NULL;
    if (bands < 1) {
        PyErr_SetString(PyExc_ValueError, "lookup: bands must be at least 1");
        return NULL;
    }
    /* a tuple of its own: reading a run may run Python code (__index__), which could change
     * the caller's list under us */
    runs_obj = PyList_AsTuple(runs_given);
    if (runs_obj == NULL)
        return NULL;
    Py_buffer query, words;
    Wanted wanted[] = {{query_obj, &query, 4, 0, "lookup query"},
                       {words_obj, &words, 8, 0, "lookup words"}};
    if (get_arrays(wanted, 2) < 0) {
        Py_DECREF(runs_obj);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t run_count = PyTuple_GET_SIZE(runs_obj), ready = 0;
    Run *runs = PyMem_Calloc(run_count ? run_count : 1, sizeof(Run));
    Found found = {NULL, NULL, 0, 0};
    if (runs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (check_size(&words, size) < 0)
        goto done;
    for (; ready < run_count; ready++)
        if (read_run(PyTuple_GET_ITEM(runs_obj, ready), &runs[ready]) < 0)
            goto done;
    const uint32_t *q = (const uint32_t *)query.buf;
    const uint64_t *w = (const uint64_t *)words.buf;
    Py_ssize_t n = query.len / 4;
    int failed = 0;
    /* the arrays are the index's, which its lock keeps still: other threads may run */
    Py_BEGIN_ALLOW_THREADS
    /* Most keys are in no run, which the filter says; those it may hold are looked up run by
     * run, each run's blocks asked of memory for all of them before any is searched: the
     * misses of a run of millions of keys then overlap instead of following one another. */
    Py_ssize_t *passing = PyMem_RawMalloc((n ? n : 1) * 3 * sizeof(Py_ssize_t));
    if (passing == NULL)
        failed = 1;
    Py_ssize_t held = 0;
    enum { CHUNK = 32 };
    for (Py_ssize_t first = 0; first < n && !failed; first += CHUNK) {
        Py_ssize_t last = first + CHUNK < n ? first + CHUNK : n;
        for (Py_ssize_t i = first; i < last; i++) {
            uint64_t word, mask;
            bloom_spot(q[i], size, &word, &mask);
            __builtin_prefetch(&w[word]);
        }
        for (Py_ssize_t i = first; i < last; i++)
            if (bloom_holds(w, size, q[i]))
                passing[held++] = i;
    }
    Py_ssize_t *lows = passing + n, *highs = passing + 2 * n;
    for (Py_ssize_t r = 0; r < run_count && !failed; r++) {
        const Run *run = &runs[r];
        const uint32_t *keys = (const uint32_t *)run->keys.buf;
        if (run->has_fences && run->fence_count)
            for (Py_ssize_t p = 0; p < held; p++) {
                const uint32_t *fences = (const uint32_t *)run->fences.buf;
                __builtin_prefetch(&fences[fence_guess(q[passing[p]], run->fence_count)]);
            }
        for (Py_ssize_t p = 0; p < held; p++) {
            narrow(run, q[passing[p]], &lows[p], &highs[p]);
            if (run->has_fences)
                for (Py_ssize_t at = lows[p]; at < highs[p]; at += 16)
                    __builtin_prefetch(&keys[at]);
        }
        for (Py_ssize_t p = 0; p < held && !failed; p++) {
            uint32_t key = q[passing[p]];
            Py_ssize_t at = lower_bound(keys, lows[p], highs[p], key);
            for (; at < run->count && keys[at] == key; at++) {
                long long slot = run->base;
                if (run->offsets.itemsize == 2)
                    slot += ((const uint16_t *)run->offsets.buf)[at];
                else
                    slot += ((const int32_t *)run->offsets.buf)[at];
                if (found_add(&found, passing[p] / bands, (int32_t)slot) < 0) {
                    failed = 1;
                    break;
                }
            }
        }
    }
    PyMem_RawFree(passing);
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_NoMemory();
        goto done;
    }
    /* (y# makes None of a NULL pointer: none found is two empty strings) */
    result = Py_BuildValue("(y#y#)", found.size ? (const char *)found.owners : "",
                           found.size * (Py_ssize_t)sizeof(int64_t),
                           found.size ? (const char *)found.slots : "",
                           found.size * (Py_ssize_t)sizeof(int32_t));
done:
    release_runs(runs, ready);
    PyMem_Free(runs);
    PyMem_RawFree(found.owners);
    PyMem_RawFree(found.slots);
    PyBuffer_Release(&query);
    PyBuffer_Release(&words);
    Py_DECREF(runs_obj);
    return result;
}

/* ------------------------------------------------------------------------------- sorting */

/* One pass of a radix sort: the entries of (keys, slots) into (to_keys, to_slots) by the byte of
 * each key at `shift`, in order within a byte (stable), from `counts` (of that byte's values). */
#define RADIX_PASS(slot_t)                                                                     \
    do {                                                                                       \
        const slot_t *from_slots = (const slot_t *)slots;                                      \
        slot_t *into_slots = (slot_t *)to_slots;                                               \
        for (Py_ssize_t i = 0; i < n; i++) {                                                   \
            Py_ssize_t at = places[(keys[i] >> shift) & 0xFF]++;                               \
            to_keys[at] = keys[i];                                                             \
            into_slots[at] = from_slots[i];                                                    \
        }                                                                                      \
    } while (0)

/* sort_pairs(keys, slots) -> (keys, slots): the uint32 keys sorted, and the slots (2- or 4-byte
 * items) beside them, equal keys in the order given, as bytes: numpy's stable argsort and two
 * takes by it, as `_Run.merged` sorts a batch's band keys. A radix sort, a byte at a time (a
 * byte all keys share is passed over): the argsort (a merge sort, for 32-bit keys) and the
 * takes were a fifth of adding a poll's items to the index. */
PyObject *
index_sort_pairs(PyObject *module, PyObject *args)
{
    PyObject *keys_obj, *slots_obj;
    if (!PyArg_ParseTuple(args, "OO:sort_pairs", &keys_obj, &slots_obj))
        return NULL;
    Py_buffer key_view, slot_view;
    Wanted wanted[] = {{keys_obj, &key_view, 4, 0, "sort_pairs keys"},
                       {slots_obj, &slot_view, 0, 0, "sort_pairs slots"}};
    if (get_arrays(wanted, 2) < 0)
        return NULL;
    PyObject *result = NULL, *out_keys = NULL, *out_slots = NULL;
    void *spare = NULL;
    Py_ssize_t n = key_view.len / 4, size = slot_view.itemsize;
    if (slot_view.len / size != n) {
        PyErr_SetString(PyExc_ValueError, "sort_pairs: as many slots as keys are needed");
        goto done;
    }
    out_keys = PyBytes_FromStringAndSize(NULL, 4 * n);
    out_slots = PyBytes_FromStringAndSize(NULL, size * n);
    spare = PyMem_RawMalloc((n ? n : 1) * (4 + size));
    if (out_keys == NULL || out_slots == NULL || spare == NULL) {
        if (spare == NULL)
            PyErr_NoMemory();
        goto done;
    }
    uint32_t *final_keys = (uint32_t *)PyBytes_AS_STRING(out_keys);
    char *final_slots = PyBytes_AS_STRING(out_slots);
    uint32_t *spare_keys = (uint32_t *)spare;
    char *spare_slots = (char *)spare + 4 * n;
    const uint32_t *given = (const uint32_t *)key_view.buf;
    Py_ssize_t counts[4][256] = {{0}};
    for (Py_ssize_t i = 0; i < n; i++)
        for (int b = 0; b < 4; b++)
            counts[b][(given[i] >> (8 * b)) & 0xFF]++;
    int passes[4], pass_count = 0;
    for (int b = 0; b < 4; b++)
        if (n && counts[b][(given[0] >> (8 * b)) & 0xFF] != n) /* not a byte all keys share */
            passes[pass_count++] = b;
    const uint32_t *keys = given;
    const char *slots = (const char *)slot_view.buf;
    if (pass_count == 0) {
        memcpy(final_keys, keys, 4 * n);
        memcpy(final_slots, slots, size * n);
    }
    for (int p = 0; p < pass_count; p++) {
        int b = passes[p], shift = 8 * b;
        /* the last pass writes the result: the ones before alternate so that it does */
        int last_here = (pass_count - p) % 2 == 1;
        uint32_t *to_keys = last_here ? final_keys : spare_keys;
        char *to_slots = last_here ? final_slots : spare_slots;
        Py_ssize_t places[256], at = 0;
        for (int v = 0; v < 256; v++) {
            places[v] = at;
            at += counts[b][v];
        }
        if (size == 4)
            RADIX_PASS(uint32_t);
        else
            RADIX_PASS(uint16_t);
        keys = to_keys;
        slots = to_slots;
    }
    result = PyTuple_Pack(2, out_keys, out_slots);
done:
    Py_XDECREF(out_keys);
    Py_XDECREF(out_slots);
    PyMem_RawFree(spare);
    PyBuffer_Release(&key_view);
    PyBuffer_Release(&slot_view);
    return result;
}

/* ------------------------------------------------------------------------------- merging */

/* merge(keys, offsets, count, new_keys, new_slots, shift): the run's first `count` entries
 * (sorted keys, the offsets beside them) and the new ones (sorted keys, stable; each slot plus
 * `shift` its offset) merged in place, each new entry before the old ones with an equal key, as
 * `_Run.merged` places them. The arrays must have room for both. */
PyObject *
index_merge(PyObject *module, PyObject *args)
{
    PyObject *keys_obj, *offsets_obj, *new_keys_obj, *new_slots_obj;
    Py_ssize_t count;
    long long shift;
    if (!PyArg_ParseTuple(args, "OOnOOL:merge", &keys_obj, &offsets_obj, &count, &new_keys_obj,
                          &new_slots_obj, &shift))
        return NULL;
    Py_buffer keys, offsets, new_keys, new_slots;
    Wanted wanted[] = {{keys_obj, &keys, 4, 1, "merge keys"},
                       {offsets_obj, &offsets, 0, 1, "merge offsets"},
                       {new_keys_obj, &new_keys, 4, 0, "merge new keys"},
                       {new_slots_obj, &new_slots, 0, 0, "merge new slots"}};
    if (get_arrays(wanted, 4) < 0)
        return NULL;
    Py_ssize_t added = new_keys.len / 4;
    Py_ssize_t room = keys.len / 4;
    if (offsets.len / offsets.itemsize < room)
        room = offsets.len / offsets.itemsize;
    if (count < 0 || added > room - count || new_slots.len / new_slots.itemsize != added) {
        PyErr_SetString(PyExc_ValueError, "merge: the run's arrays have no room for the new keys");
    }
    else if (shift < -(1LL << 40) || shift > (1LL << 40)) { /* offsets are slots less a base */
        PyErr_SetString(PyExc_ValueError, "merge: shift out of range");
    }
    else if (added && (keys.buf == new_keys.buf || offsets.buf == new_slots.buf)) {
        PyErr_SetString(PyExc_ValueError, "merge: the new keys must not be the run's own");
    }
    else {
        uint32_t *k = (uint32_t *)keys.buf;
        const uint32_t *nk = (const uint32_t *)new_keys.buf;
        int wide = offsets.itemsize == 4, wide_new = new_slots.itemsize == 4;
        uint16_t *o16 = (uint16_t *)offsets.buf;
        int32_t *o32 = (int32_t *)offsets.buf;
        const uint16_t *n16 = (const uint16_t *)new_slots.buf;
        const int32_t *n32 = (const int32_t *)new_slots.buf;
        Py_ssize_t i = count - 1, j = added - 1, at = count + added - 1;
        Py_BEGIN_ALLOW_THREADS
        /* from the last: an old entry moves up only, onto places already read */
        while (j >= 0) {
            if (i >= 0 && k[i] >= nk[j]) {
                k[at] = k[i];
                if (wide)
                    o32[at] = o32[i];
                else
                    o16[at] = o16[i];
                i--;
            }
            else {
                long long value = (wide_new ? (long long)n32[j] : (long long)n16[j]) + shift;
                k[at] = nk[j];
                if (wide)
                    o32[at] = (int32_t)value;
                else
                    o16[at] = (uint16_t)value;
                j--;
            }
            at--;
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&keys);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&new_keys);
    PyBuffer_Release(&new_slots);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------ verifying */

/* Sorts n values in place, least significant digit first (8 bits for a batch's few thousand,
 * 16 for millions, so that counting a digit costs about as much as moving the values), skipping
 * the digits where all values agree (most of a pair's high half: the few queries of a batch).
 * qsort's comparisons took 10 s where boilerplate gave a batch 126 million candidate pairs;
 * numpy's sort, which the Python code uses, 4. Returns -1 where no room for the copy was had. */
static int
sort_u64_from(uint64_t *values, Py_ssize_t n, int first_bit);

static int
sort_u64(uint64_t *values, Py_ssize_t n)
{
    return sort_u64_from(values, n, 0);
}

/* `sort_u64` of values whose bits below `first_bit` already ascend in the order given (a position
 * beside a key): the passes over them are left out, the sort being stable. */
static int
sort_u64_from(uint64_t *values, Py_ssize_t n, int first_bit)
{
    if (n < 2)
        return 0;
    if (n < 64) { /* insertion sort: small batches are most */
        for (Py_ssize_t i = 1; i < n; i++) {
            uint64_t v = values[i];
            Py_ssize_t j = i;
            while (j > 0 && values[j - 1] > v) {
                values[j] = values[j - 1];
                j--;
            }
            values[j] = v;
        }
        return 0;
    }
    int bits = n < (1 << 16) ? 8 : 16;
    Py_ssize_t buckets = (Py_ssize_t)1 << bits;
    uint64_t mask = (uint64_t)buckets - 1;
    uint64_t *other = PyMem_RawMalloc(n * sizeof(uint64_t));
    Py_ssize_t *counts = PyMem_RawMalloc(buckets * sizeof(Py_ssize_t));
    if (other == NULL || counts == NULL) {
        PyMem_RawFree(other);
        PyMem_RawFree(counts);
        return -1;
    }
    uint64_t *from = values, *to = other;
    for (int shift = first_bit - first_bit % bits; shift < 64; shift += bits) {
        memset(counts, 0, buckets * sizeof(Py_ssize_t));
        for (Py_ssize_t i = 0; i < n; i++)
            counts[(from[i] >> shift) & mask]++;
        if (counts[(from[0] >> shift) & mask] == n)
            continue; /* every value has this digit */
        Py_ssize_t at = 0;
        for (Py_ssize_t d = 0; d < buckets; d++) {
            Py_ssize_t c = counts[d];
            counts[d] = at;
            at += c;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            to[counts[(from[i] >> shift) & mask]++] = from[i];
        uint64_t *swap = from;
        from = to;
        to = swap;
    }
    if (from != values)
        memcpy(values, from, n * sizeof(uint64_t));
    PyMem_RawFree(other);
    PyMem_RawFree(counts);
    return 0;
}

/* The distinct values of `codes[0..n)` that occur at least `needed` times, sorted, written over
 * its start; returns how many, or -1 where no memory was had. A batch's candidate pairs are
 * mostly pairs that share one band (a key common to many items, not a like item) and are
 * dropped here: counted in a hash table, only the few kept are sorted, where sorting them all
 * (a radix sort) was nearly all of verifying a batch. No value may be UINT64_MAX (the empty
 * mark; a pair's high half is a position in a batch, below 2**31). */
enum { SHARED_TABLE_MOST = 1 << 14 }; /* pairs counted in a table (288 KiB at most) */

static Py_ssize_t
shared_codes(uint64_t *codes, Py_ssize_t n, Py_ssize_t needed)
{
    Py_ssize_t kept = 0;
    /* A small batch, or a big one (the table takes 18 bytes a pair where the sort's copy takes
     * 8: a big batch's would raise the poller's peak): sorted, then counted in runs. */
    if (n < 64 || n > SHARED_TABLE_MOST || needed > 255) {
        if (sort_u64(codes, n) < 0)
            return -1;
        for (Py_ssize_t i = 0; i < n;) {
            Py_ssize_t j = i + 1;
            while (j < n && codes[j] == codes[i])
                j++;
            if (j - i >= needed)
                codes[kept++] = codes[i];
            i = j;
        }
        return kept;
    }
    int bits = 7;
    while (((Py_ssize_t)1 << bits) < 2 * n)
        bits++;
    Py_ssize_t size = (Py_ssize_t)1 << bits, mask = size - 1;
    uint64_t *table = PyMem_RawMalloc(size * sizeof(uint64_t));
    unsigned char *counts = PyMem_RawCalloc(size, 1); /* held at 255: `needed` is less */
    if (table == NULL || counts == NULL) {
        PyMem_RawFree(table);
        PyMem_RawFree(counts);
        return -1;
    }
    memset(table, 0xFF, size * sizeof(uint64_t));
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t code = codes[i];
        Py_ssize_t at = (Py_ssize_t)((code * 0x9E3779B97F4A7C15ull) >> (64 - bits));
        while (table[at] != code && table[at] != UINT64_MAX)
            at = (at + 1) & mask;
        table[at] = code;
        counts[at] += counts[at] < 255;
    }
    for (Py_ssize_t at = 0; at < size; at++)
        if (counts[at] >= needed && table[at] != UINT64_MAX)
            codes[kept++] = table[at];
    PyMem_RawFree(table);
    PyMem_RawFree(counts);
    if (sort_u64(codes, kept) < 0)
        return -1;
    return kept;
}

/* verify(owners, slots, needed, after, ids, alive, times, moments, span, sigs, blocks, block_rows,
 * bits, numbers, threshold, most) -> [(query, item id, score), ...]: `SimilarityIndex._verify`,
 * the candidates `lookup` found scored. A pair must come `needed` times (once a band shared),
 * be of an item above id `after` (0: any), be among the `most` highest slots of its query, alive
 * and within `span` seconds, and agree on at least `threshold` of the low `bits` bits of the
 * MinHash values (the index's signature rows, in blocks of `block_rows`), and their headline
 * numbers must not conflict (both have some, none shared). `sigs`: the queries' fingerprints
 * as uint32 (NUM_PERM values, then NUMBERS numbers). */
PyObject *
index_verify(PyObject *module, PyObject *args)
{
    PyObject *owners_obj, *slots_obj, *ids_obj, *alive_obj, *times_obj, *moments_obj, *sigs_obj;
    PyObject *blocks_obj, *numbers_obj;
    Py_ssize_t needed, block_rows, most;
    long long after;
    int bits;
    double span, threshold;
    PyObject *blocks_given;
    if (!PyArg_ParseTuple(args, "OOnLOOOOdOO!niOdn:verify", &owners_obj, &slots_obj, &needed,
                          &after, &ids_obj, &alive_obj, &times_obj, &moments_obj, &span, &sigs_obj,
                          &PyList_Type, &blocks_given, &block_rows, &bits, &numbers_obj,
                          &threshold, &most))
        return NULL;
    if ((bits != 8 && bits != 16) || block_rows < 1 || most < 1
        || block_rows > PY_SSIZE_T_MAX / (128 * 2)) {
        PyErr_SetString(PyExc_ValueError, "verify: bits 8 or 16, block rows and most above 0");
        return NULL;
    }
    /* a tuple of its own: a buffer request may run Python code that changes the list */
    blocks_obj = PyList_AsTuple(blocks_given);
    if (blocks_obj == NULL)
        return NULL;
    enum { PERM = 128, NUMBERS = 4, WORDS = PERM + NUMBERS };
    Py_buffer views[8];
    Wanted wanted[] = {
        {owners_obj, &views[0], 8, 0, "verify owners"},
        {slots_obj, &views[1], 4, 0, "verify slots"},
        {ids_obj, &views[2], 8, 0, "verify ids"},
        {alive_obj, &views[3], 1, 0, "verify alive"},
        {times_obj, &views[4], 8, 0, "verify times"},
        {moments_obj, &views[5], 8, 0, "verify moments"},
        {sigs_obj, &views[6], 4, 0, "verify sigs"},
        {numbers_obj, &views[7], 4, 0, "verify numbers"},
    };
    int held = 0;
    PyObject *result = NULL;
    Py_buffer *blocks = NULL;
    Py_ssize_t block_count = PyTuple_GET_SIZE(blocks_obj), blocks_held = 0;
    uint64_t *codes = NULL;
    if (get_arrays(wanted, 8) < 0)
        goto done;
    held = 8;
    const int64_t *owners = views[0].buf, *ids = views[2].buf;
    const int32_t *slots = views[1].buf;
    const unsigned char *alive = views[3].buf;
    const double *times = views[4].buf, *moments = views[5].buf;
    const uint32_t *sigs = views[6].buf, *numbers = views[7].buf;
    Py_ssize_t n = views[0].len / 8, capacity = views[2].len / 8, queries = views[5].len / 8;
    if (views[1].len / 4 != n || views[3].len != capacity || views[4].len / 8 != capacity
        || views[7].len / 4 != capacity * NUMBERS || views[6].len / 4 != queries * WORDS) {
        PyErr_SetString(PyExc_ValueError, "verify: arrays of unequal lengths");
        goto done;
    }
    Py_ssize_t row_bytes = PERM * (bits / 8);
    blocks = PyMem_Calloc(block_count ? block_count : 1, sizeof(Py_buffer));
    if (blocks == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; blocks_held < block_count; blocks_held++) {
        Py_buffer *block = &blocks[blocks_held];
        if (get_array(PyTuple_GET_ITEM(blocks_obj, blocks_held), block, bits / 8, 0,
                      "verify block")
            < 0)
            goto done;
        if (block->len != block_rows * row_bytes) {
            PyBuffer_Release(block);
            PyErr_SetString(PyExc_ValueError, "verify: a block of the wrong size");
            goto done;
        }
    }
    /* the pairs, sorted: a query's candidates by slot, each pair as often as bands it shares */
    codes = PyMem_Malloc((n ? n : 1) * sizeof(uint64_t));
    if (codes == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* (a slot's block is within the blocks given: no division a pair) */
    Py_ssize_t rows_held = block_count < PY_SSIZE_T_MAX / block_rows ? block_count * block_rows
                                                                      : PY_SSIZE_T_MAX;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (owners[i] < 0 || owners[i] >= queries || slots[i] < 0 || slots[i] >= capacity
            || slots[i] >= rows_held) {
            PyErr_SetString(PyExc_ValueError, "verify: a candidate out of range");
            goto done;
        }
        codes[i] = ((uint64_t)owners[i] << 32) | (uint32_t)slots[i];
    }
    /* the distinct pairs shared often enough (and of items above `after`), in place */
    Py_ssize_t shared = shared_codes(codes, n, needed);
    if (shared < 0) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < shared; i++)
        if (!after || ids[(uint32_t)codes[i]] > after)
            codes[kept++] = codes[i];
    result = PyList_New(0);
    if (result == NULL)
        goto done;
    for (Py_ssize_t first = 0; first < kept;) {
        Py_ssize_t query = (Py_ssize_t)(codes[first] >> 32), end = first;
        while (end < kept && (Py_ssize_t)(codes[end] >> 32) == query)
            end++;
        const uint32_t *mine = sigs + query * WORDS;
        const uint32_t *my_numbers = mine + PERM;
        int i_have = my_numbers[0] | my_numbers[1] | my_numbers[2] | my_numbers[3];
        /* the newest `most` of a query's candidates */
        for (Py_ssize_t at = end - most > first ? end - most : first; at < end; at++) {
            Py_ssize_t slot = (Py_ssize_t)(uint32_t)codes[at];
            if (!alive[slot] || !(fabs(times[slot] - moments[query]) <= span))
                continue;
            const unsigned char *block = blocks[slot / block_rows].buf;
            const unsigned char *row = block + (slot % block_rows) * row_bytes;
            int same = 0;
            if (bits == 8) {
                for (int k = 0; k < PERM; k++)
                    same += row[k] == (unsigned char)mine[k];
            }
            else {
                const uint16_t *wide = (const uint16_t *)row;
                for (int k = 0; k < PERM; k++)
                    same += wide[k] == (uint16_t)mine[k];
            }
            double score = (double)same / PERM;
            if (!(score >= threshold))
                continue;
            const uint32_t *theirs = numbers + slot * NUMBERS;
            if (i_have && (theirs[0] | theirs[1] | theirs[2] | theirs[3])) {
                int shared = 0;
                for (int a = 0; a < NUMBERS && !shared; a++)
                    for (int b = 0; b < NUMBERS; b++)
                        if (my_numbers[a] && my_numbers[a] == theirs[b]) {
                            shared = 1;
                            break;
                        }
                if (!shared)
                    continue;
            }
            PyObject *match = Py_BuildValue("(nLd)", query, (long long)ids[slot], score);
            if (match == NULL || PyList_Append(result, match) < 0) {
                Py_XDECREF(match);
                Py_CLEAR(result);
                goto done;
            }
            Py_DECREF(match);
        }
        first = end;
    }
done:
    PyMem_Free(codes);
    for (Py_ssize_t b = 0; b < blocks_held; b++)
        PyBuffer_Release(&blocks[b]);
    PyMem_Free(blocks);
    for (int v = 0; v < held; v++)
        PyBuffer_Release(&views[v]);
    Py_DECREF(blocks_obj);
    return result;
}

/* ------------------------------------------------------------------------- within a batch */

typedef struct {
    uint64_t *codes;
    Py_ssize_t size, room;
} Codes;

static int
codes_add(Codes *codes, uint64_t code)
{
    if (codes->size == codes->room) {
        Py_ssize_t room = codes->room ? codes->room * 2 : 1024;
        uint64_t *grown = PyMem_Realloc(codes->codes, room * sizeof(uint64_t));
        if (grown == NULL)
            return -1;
        codes->codes = grown;
        codes->room = room;
    }
    codes->codes[codes->size++] = code;
    return 0;
}

/* within(keys, bands, needed, head, tail, sigs, times, span, threshold) -> (pairs, compared):
 * `SimilarityIndex.similar_within` for a batch of items (`keys`: their band keys, `bands` an
 * item; `sigs`: their fingerprints as uint32; `times`: their moments). Items sharing a band key
 * are paired, each with the first `head` and the latest `tail` items before it in the key's
 * bucket; a pair must come `needed` times (once a band shared), agree on at least `threshold`
 * of the MinHash values, be within `span` seconds and have no conflicting headline numbers.
 * `pairs`: for each item, (earlier item, score) in order of the earlier item; `compared`: the
 * pairs whose signatures were compared. */
PyObject *
index_within(PyObject *module, PyObject *args)
{
    PyObject *keys_obj, *sigs_obj, *times_obj;
    Py_ssize_t bands, needed, head, tail;
    double span, threshold;
    if (!PyArg_ParseTuple(args, "OnnnnOOdd:within", &keys_obj, &bands, &needed, &head, &tail,
                          &sigs_obj, &times_obj, &span, &threshold))
        return NULL;
    enum { PERM = 128, NUMBERS = 4, WORDS = PERM + NUMBERS };
    if (bands < 1 || head < 0 || tail < 0) {
        PyErr_SetString(PyExc_ValueError, "within: bands above 0, head and tail not below");
        return NULL;
    }
    Py_buffer keys, sigs, times;
    Wanted wanted[] = {{keys_obj, &keys, 4, 0, "within keys"},
                       {sigs_obj, &sigs, 4, 0, "within sigs"},
                       {times_obj, &times, 8, 0, "within times"}};
    if (get_arrays(wanted, 3) < 0)
        return NULL;
    PyObject *result = NULL, *pairs = NULL;
    uint64_t *ranked = NULL;
    Codes found = {NULL, 0, 0};
    Py_ssize_t n = keys.len / 4, count = times.len / 8;
    if (n % bands || n / bands != count || sigs.len / 4 / WORDS != count
        || sigs.len / 4 % WORDS || count >= (1LL << 31)) {
        PyErr_SetString(PyExc_ValueError, "within: arrays of unequal lengths");
        goto done;
    }
    const uint32_t *k = keys.buf, *sig = sigs.buf;
    const double *when = times.buf;
    /* the keys in order, each bucket's entries in order of position (so of item) */
    ranked = PyMem_Malloc((n ? n : 1) * sizeof(uint64_t));
    if (ranked == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        ranked[i] = ((uint64_t)k[i] << 32) | (uint64_t)i;
    if (sort_u64_from(ranked, n, 32) < 0) /* (the positions ascend already) */
        goto nomemory;
    for (Py_ssize_t first = 0; first < n;) {
        Py_ssize_t end = first + 1;
        while (end < n && ranked[end] >> 32 == ranked[first] >> 32)
            end++;
        for (Py_ssize_t at = first + 1; at < end; at++) {
            Py_ssize_t rank = at - first;
            uint64_t later = (uint32_t)ranked[at] / bands;
            for (Py_ssize_t t = 0; t < head && t < rank; t++) /* the first of the bucket */
                if (codes_add(&found, later << 32 | ((uint32_t)ranked[first + t] / bands)) < 0)
                    goto nomemory;
            for (Py_ssize_t t = 1; t <= tail && rank - t >= head; t++) /* the latest before */
                if (codes_add(&found, later << 32 | ((uint32_t)ranked[at - t] / bands)) < 0)
                    goto nomemory;
        }
        first = end;
    }
    /* the pairs sharing `needed` bands or more, each once (`shared_codes`) */
    Py_ssize_t distinct = found.size ? shared_codes(found.codes, found.size, needed) : 0;
    if (distinct < 0)
        goto nomemory;
    pairs = PyList_New(count);
    if (pairs == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *empty = PyList_New(0);
        if (empty == NULL)
            goto done;
        PyList_SET_ITEM(pairs, i, empty);
    }
    /* each pair shared often enough, compared */
    Py_ssize_t compared = 0;
    for (Py_ssize_t i = 0; i < distinct; i++) {
        Py_ssize_t later = (Py_ssize_t)(found.codes[i] >> 32);
        Py_ssize_t earlier = (Py_ssize_t)(uint32_t)found.codes[i];
        if (later <= earlier)
            continue;
        compared++;
        const uint32_t *a = sig + later * WORDS, *b = sig + earlier * WORDS;
        int same = 0;
        for (int v = 0; v < PERM; v++)
            same += a[v] == b[v];
        double score = (double)same / PERM;
        if (!(score >= threshold) || !(fabs(when[later] - when[earlier]) <= span))
            continue;
        const uint32_t *mine = a + PERM, *theirs = b + PERM;
        if ((mine[0] | mine[1] | mine[2] | mine[3])
            && (theirs[0] | theirs[1] | theirs[2] | theirs[3])) {
            int shared = 0;
            for (int x = 0; x < NUMBERS && !shared; x++)
                for (int y = 0; y < NUMBERS; y++)
                    if (mine[x] && mine[x] == theirs[y]) {
                        shared = 1;
                        break;
                    }
            if (!shared)
                continue;
        }
        PyObject *pair = Py_BuildValue("(nd)", earlier, score);
        if (pair == NULL || PyList_Append(PyList_GET_ITEM(pairs, later), pair) < 0) {
            Py_XDECREF(pair);
            goto done;
        }
        Py_DECREF(pair);
    }
    result = Py_BuildValue("(On)", pairs, compared);
    goto done;
nomemory:
    PyErr_NoMemory();
done:
    Py_XDECREF(pairs);
    PyMem_Free(ranked);
    PyMem_Free(found.codes);
    PyBuffer_Release(&keys);
    PyBuffer_Release(&sigs);
    PyBuffer_Release(&times);
    return result;
}

/* ------------------------------------------------------------------------------- confirming */

/* compare(a, b, perms, numbers) -> (equal, conflict): two fingerprints (little-endian uint32:
 * `perms` MinHash values, then `numbers` headline numbers, 0 for none) as `similarity` and
 * `alike` read them: how many of the values are equal, and whether both have numbers and share
 * none. Storage confirms each candidate of the index this way, where numpy's calls (two arrays
 * made, a comparison, `isin`) cost 25 us a pair. */
PyObject *
index_compare(PyObject *module, PyObject *args)
{
    Py_buffer a, b;
    Py_ssize_t perms, numbers;
    if (!PyArg_ParseTuple(args, "y*y*nn:compare", &a, &b, &perms, &numbers))
        return NULL;
    PyObject *result = NULL;
    if (perms < 0 || numbers < 0 || perms > PY_SSIZE_T_MAX / 8 - numbers
        || a.len < 4 * (perms + numbers) || b.len < 4 * (perms + numbers)) {
        PyErr_SetString(PyExc_ValueError, "compare: fingerprints shorter than their values");
        goto done;
    }
    const unsigned char *x = a.buf, *y = b.buf;
    Py_ssize_t equal = 0;
    for (Py_ssize_t i = 0; i < 4 * perms; i += 4)
        equal += memcmp(x + i, y + i, 4) == 0;
    int mine = 0, theirs = 0, shared = 0;
    static const unsigned char zero[4] = {0, 0, 0, 0};
    for (Py_ssize_t i = 4 * perms; i < 4 * (perms + numbers); i += 4) {
        int have = memcmp(x + i, zero, 4) != 0;
        mine |= have;
        theirs |= memcmp(y + i, zero, 4) != 0;
        if (!have)
            continue;
        for (Py_ssize_t j = 4 * perms; j < 4 * (perms + numbers); j += 4)
            shared |= memcmp(x + i, y + j, 4) == 0;
    }
    result = Py_BuildValue("(nO)", equal, mine && theirs && !shared ? Py_True : Py_False);
done:
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    return result;
}

/* ------------------------------------------------------------------------------- band keys */

/* band_keys(sigs, width, bands, rows) -> bytes: for each signature (`width` uint32 a row of
 * `sigs`) and band, one 32-bit key of its `rows` values, as `SimilarityIndex._band_keys` makes
 * them: mixed in 64 bits a value at a time, the band's number added, the high half kept. The
 * numpy code made some fifteen arrays a batch, each paying numpy's cost per call. */
PyObject *
index_band_keys(PyObject *module, PyObject *args)
{
    PyObject *sigs_obj;
    Py_ssize_t width, bands, rows;
    if (!PyArg_ParseTuple(args, "Onnn:band_keys", &sigs_obj, &width, &bands, &rows))
        return NULL;
    Py_buffer sigs;
    if (get_array(sigs_obj, &sigs, 4, 0, "band_keys sigs") < 0)
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t values = sigs.len / 4;
    if (width < 1 || bands < 0 || rows < 1 || bands > width / rows || values % width) {
        PyErr_SetString(PyExc_ValueError, "band_keys: bands of rows must fit a signature's width");
        goto done;
    }
    Py_ssize_t count = values / width;
    result = PyBytes_FromStringAndSize(NULL, count * bands * 4);
    if (result == NULL)
        goto done;
    uint32_t *out = (uint32_t *)PyBytes_AS_STRING(result);
    const uint32_t *s = (const uint32_t *)sigs.buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        const uint32_t *row = s + i * width;
        for (Py_ssize_t b = 0; b < bands; b++) {
            uint64_t key = 0;
            for (Py_ssize_t r = 0; r < rows; r++) {
                key = key * MIX + row[b * rows + r];
                key ^= key >> 29;
            }
            key += (uint64_t)b * MIX;
            out[i * bands + b] = (uint32_t)(key >> 32);
        }
    }
done:
    PyBuffer_Release(&sigs);
    return result;
}
