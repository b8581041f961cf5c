/*
 * nystra_shim.c: VapourSynth API-4 plugin that registers the `nystra` namespace and hands every call to the
 * Python implementation (vsnystra.vs.bridge -> vsnystra.vs.filters).
 *
 * Why a native shim: VapourSynth namespaces come only from native plugins, and users want
 * `core.nystra.RVRT(clip)` in a plain .vpy with no import and no LoadPlugin.
 *
 * How a call works (see shared notes/vapoursynth.md section 3.1):
 *   1. The filter callback takes the GIL (CPython symbols resolved with dlsym: we link neither libpython nor
 *      libvapoursynth, so one binary serves every CPython >= 3.12) and calls
 *      vsnystra.vs.bridge.provide(name, module, namespace).
 *   2. provide() calls core.<namespace>.SetImpl(name=..., func=callable); VapourSynth's Python binding wraps the
 *      callable as a VSFunction, and our SetImpl callback stores it in a THREAD-LOCAL slot.
 *   3. The filter callback releases the GIL, calls the VSFunction, frees it, and moves the returned clip into
 *      `clip` (or forwards the error).
 * Nothing outlives the call: no per-core table, so recreated cores never see a stale implementation and nothing
 * leaks when a core is freed. Nothing is ever written to stdout (vspipe streams video there).
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "VapourSynth4.h"
#include "nystra_manifest.h"

#define ERRLEN 2048

typedef struct PyObjectOpaque PyObjectOpaque;

/* The few stable-ABI CPython entry points we need, resolved per call (cheap next to building a filter). */
typedef struct {
    int (*IsInitialized)(void);
    int (*GILState_Ensure)(void);
    void (*GILState_Release)(int);
    PyObjectOpaque *(*Import_ImportModule)(const char *);
    PyObjectOpaque *(*Object_CallMethod)(PyObjectOpaque *, const char *, const char *, ...);
    PyObjectOpaque *(*Err_GetRaisedException)(void);
    PyObjectOpaque *(*Object_Repr)(PyObjectOpaque *);
    const char *(*Unicode_AsUTF8AndSize)(PyObjectOpaque *, ssize_t *);
    void (*DecRef)(PyObjectOpaque *);
} PythonApi;

/* Per-thread hand-over slot filled by SetImpl while this thread runs the bridge. */
static __thread const char *tls_pending_name;
static __thread VSCore *tls_pending_core;
static __thread VSFunction *tls_impl;

#define RESOLVE(field, symbol)                                   \
    do {                                                         \
        *(void **)(&api->field) = dlsym(RTLD_DEFAULT, symbol);   \
        if (!api->field)                                         \
            return symbol;                                       \
    } while (0)

/* Returns NULL when every symbol was found, else the name of the first missing one. */
static const char *resolve_python(PythonApi *api) {
    RESOLVE(IsInitialized, "Py_IsInitialized");
    RESOLVE(GILState_Ensure, "PyGILState_Ensure");
    RESOLVE(GILState_Release, "PyGILState_Release");
    RESOLVE(Import_ImportModule, "PyImport_ImportModule");
    RESOLVE(Object_CallMethod, "PyObject_CallMethod");
    RESOLVE(Err_GetRaisedException, "PyErr_GetRaisedException");
    RESOLVE(Object_Repr, "PyObject_Repr");
    RESOLVE(Unicode_AsUTF8AndSize, "PyUnicode_AsUTF8AndSize");
    RESOLVE(DecRef, "Py_DecRef");
    return NULL;
}

/* Describe the pending Python exception (and clear it) into buf. Needs the GIL. */
static void describe_exception(const PythonApi *api, char *buf, size_t len) {
    PyObjectOpaque *exc = api->Err_GetRaisedException();
    const char *text = NULL;
    PyObjectOpaque *repr = exc ? api->Object_Repr(exc) : NULL;
    if (repr)
        text = api->Unicode_AsUTF8AndSize(repr, NULL);
    snprintf(buf, len, "%s", text ? text : "unknown Python error");
    if (repr)
        api->DecRef(repr);
    if (exc)
        api->DecRef(exc);
    /* A failure inside Repr/AsUTF8 leaves a new exception: fetch and drop it. */
    exc = api->Err_GetRaisedException();
    if (exc)
        api->DecRef(exc);
}

/* Run the Python bridge so that it fills tls_impl. Returns 0 on success, else writes err. */
static int run_bridge(const char *name, char *err, size_t errlen) {
    PythonApi api;
    const char *missing = resolve_python(&api);
    if (missing) {
        snprintf(err, errlen,
                 "%s.%s: the CPython symbol %s is not loaded in this process (the filter is implemented in Python); "
                 "fix: run the script through vspipe or Python with vsnystra installed, and run `vapoursynth config` "
                 "with that interpreter",
                 NYSTRA_NAMESPACE, name, missing);
        return -1;
    }
    if (!api.IsInitialized()) {
        snprintf(err, errlen,
                 "%s.%s: Python is loaded but not initialised in this host; fix: call the filter from a .vpy script "
                 "(vspipe) or from Python",
                 NYSTRA_NAMESPACE, name);
        return -1;
    }
    int gil = api.GILState_Ensure();
    int rc = 0;
    PyObjectOpaque *module = api.Import_ImportModule("vsnystra.vs.bridge");
    if (!module) {
        char why[ERRLEN / 2];
        describe_exception(&api, why, sizeof why);
        snprintf(err, errlen,
                 "%s.%s: cannot import vsnystra.vs.bridge in the Python that runs VapourSynth (%s); fix: install "
                 "vsnystra into that interpreter (scripts/setup.sh) and run `vapoursynth config` with it",
                 NYSTRA_NAMESPACE, name, why);
        rc = -1;
    } else {
        PyObjectOpaque *res =
            api.Object_CallMethod(module, "provide", "sss", name, NYSTRA_PYTHON_MODULE, NYSTRA_NAMESPACE);
        if (!res) {
            char why[ERRLEN / 2];
            describe_exception(&api, why, sizeof why);
            snprintf(err, errlen, "%s.%s: vsnystra.vs.bridge.provide failed: %s", NYSTRA_NAMESPACE, name, why);
            rc = -1;
        } else {
            api.DecRef(res);
        }
        api.DecRef(module);
    }
    api.GILState_Release(gil);
    return rc;
}

static void VS_CC filter_create(const VSMap *in, VSMap *out, void *user_data, VSCore *core, const VSAPI *vsapi) {
    const char *name = (const char *)user_data;
    char err[ERRLEN];

    /* Save the slot so a nested call (an implementation calling another nystra filter) cannot clobber it. */
    const char *saved_name = tls_pending_name;
    VSCore *saved_core = tls_pending_core;
    VSFunction *saved_impl = tls_impl;
    tls_pending_name = name;
    tls_pending_core = core;
    tls_impl = NULL;
    int rc = run_bridge(name, err, sizeof err);
    VSFunction *impl = tls_impl;
    tls_pending_name = saved_name;
    tls_pending_core = saved_core;
    tls_impl = saved_impl;

    if (rc != 0 || !impl) {
        if (impl)
            vsapi->freeFunction(impl);
        if (rc == 0)
            snprintf(err, sizeof err, "%s.%s: vsnystra.vs.bridge did not provide an implementation; fix: reinstall "
                     "vsnystra (scripts/setup.sh)", NYSTRA_NAMESPACE, name);
        vsapi->mapSetError(out, err);
        return;
    }

    VSMap *result = vsapi->createMap();
    vsapi->callFunction(impl, in, result);
    vsapi->freeFunction(impl);
    const char *error = vsapi->mapGetError(result);
    if (error) {
        vsapi->mapSetError(out, error);
        vsapi->freeMap(result);
        return;
    }
    int e1 = 0, e2 = 0;
    VSNode *node = vsapi->mapGetNode(result, "val", 0, &e1);
    if (!node)
        node = vsapi->mapGetNode(result, "clip", 0, &e2);
    if (!node) {
        snprintf(err, sizeof err, "%s.%s: the Python implementation %s.%s returned no clip; fix: it must return a "
                 "vs.VideoNode", NYSTRA_NAMESPACE, name, NYSTRA_PYTHON_MODULE, name);
        vsapi->mapSetError(out, err);
    } else {
        vsapi->mapConsumeNode(out, "clip", node, maReplace);
    }
    vsapi->freeMap(result);
}

/* Public (names may not start with '_') but only meaningful while this thread runs the bridge. */
static void VS_CC set_impl(const VSMap *in, VSMap *out, void *user_data, VSCore *core, const VSAPI *vsapi) {
    (void)user_data;
    int e = 0;
    const char *name = vsapi->mapGetData(in, "name", 0, &e);
    char err[ERRLEN];
    if (!tls_pending_name || !name || strcmp(name, tls_pending_name) != 0 || core != tls_pending_core) {
        snprintf(err, sizeof err, "%s.%s: internal hook of vsnystra's bridge, valid only while a %s filter is being "
                 "created on this thread and core (got name=%s); fix: call core.%s.RVRT/SwinIR/Uformer instead",
                 NYSTRA_NAMESPACE, NYSTRA_IMPL_HOOK, NYSTRA_NAMESPACE, name ? name : "<none>", NYSTRA_NAMESPACE);
        vsapi->mapSetError(out, err);
        return;
    }
    VSFunction *func = vsapi->mapGetFunction(in, "func", 0, &e);
    if (!func) {
        snprintf(err, sizeof err, "%s.%s: func is missing", NYSTRA_NAMESPACE, NYSTRA_IMPL_HOOK);
        vsapi->mapSetError(out, err);
        return;
    }
    if (tls_impl) /* dedupe: the last hand-over wins */
        vsapi->freeFunction(tls_impl);
    tls_impl = func;
}

VS_EXTERNAL_API(void) VapourSynthPluginInit2(VSPlugin *plugin, const VSPLUGINAPI *vspapi) {
    vspapi->configPlugin(NYSTRA_IDENTIFIER, NYSTRA_NAMESPACE, NYSTRA_DESCRIPTION,
                         VS_MAKE_VERSION(NYSTRA_VERSION_MAJOR, NYSTRA_VERSION_MINOR), VAPOURSYNTH_API_VERSION, 0,
                         plugin);
    for (const NystraFunctionSpec *f = nystra_functions; f->name; ++f)
        vspapi->registerFunction(f->name, f->args, f->returns, filter_create, (void *)f->name, plugin);
    vspapi->registerFunction(NYSTRA_IMPL_HOOK, "name:data;func:func;", "", set_impl, NULL, plugin);
}
