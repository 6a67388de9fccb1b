/* What one source file of the C module (aggregator/_speedups.c) takes from another. */
#ifndef AGGREGATOR_SPEEDUPS_H
#define AGGREGATOR_SPEEDUPS_H

#include <Python.h>

/* _index.c: the story index's per-batch work */
PyObject *index_bloom_add(PyObject *module, PyObject *args);
PyObject *index_lookup(PyObject *module, PyObject *args);
PyObject *index_merge(PyObject *module, PyObject *args);
PyObject *index_verify(PyObject *module, PyObject *args);
PyObject *index_within(PyObject *module, PyObject *args);
PyObject *index_compare(PyObject *module, PyObject *args);
PyObject *index_band_keys(PyObject *module, PyObject *args);
PyObject *index_sort_pairs(PyObject *module, PyObject *args);

/* _sanitize.c: feed HTML an HTML parser reads as written, cleaned as nh3 cleans it */
PyObject *sanitize_clean_simple(PyObject *module, PyObject *args);

#endif
