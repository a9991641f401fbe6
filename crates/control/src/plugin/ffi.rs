//! The C side of OpenVPN's plugin API (v1, v2 and v3, as documented in
//! 2.6's `openvpn-plugin.h`; these declarations are ferrovpn's own). Every
//! call into a plugin, and every callback a plugin makes, goes through this
//! module; the rest of ferrovpn sees [`Loaded`] only. A [`Loaded`] plugin
//! is not `Send`: it lives on the plugin thread that opened it.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::path::Path;
use std::sync::Once;

use tracing::{debug, error, info, warn};

/// `OPENVPN_PLUGINv3_STRUCTVER` of 2.6: the layout of the v3 structs below
/// (callbacks with base64 helpers, version fields).
const STRUCT_VERSION: c_int = 5;
/// The API version ferrovpn implements (`openvpn_plugin_min_version_required_v1`).
const API_VERSION: c_int = 3;
pub const FUNC_SUCCESS: c_int = 0;
pub const FUNC_DEFERRED: c_int = 2;
/// `SSLAPI_OPENSSL`, what Debian's 2.6 tells every plugin: the
/// certificate objects a `PLUGIN_TLS_VERIFY` plugin gets are OpenSSL's
/// (ferrovpn makes them with libcrypto, see `x509.rs`).
const SSL_API_OPENSSL: c_int = 1;
/// `OPENVPN_PLUGIN_INIT_PRE_DAEMON` and `POST_DAEMON`: ferrovpn opens
/// plugins at start, as root, before privileges are dropped.
const INIT_POINTS_SERVED: [c_int; 2] = [2, 3];
/// `PLOG_*` severity bits.
const LOG_ERR: c_int = 1;
const LOG_WARN: c_int = 2;
const LOG_NOTE: c_int = 4;

/// `struct openvpn_plugin_string_list`: name/value pairs a plugin returns,
/// allocated by it with `malloc`, freed by the caller with `free`.
#[repr(C)]
struct StringList {
    next: *mut StringList,
    name: *mut c_char,
    value: *mut c_char,
}

type LogFn = unsafe extern "C" fn(c_int, *const c_char, *const c_char, ...);
/// The last argument is a `va_list`, which as a parameter is a pointer.
type VlogFn = unsafe extern "C" fn(c_int, *const c_char, *const c_char, *mut c_void);
type LogSink = extern "C" fn(c_int, *const c_char, *const c_char);

// src/plugin/log_shim.c (built by build.rs).
unsafe extern "C" {
    fn ferrovpn_plugin_log(flags: c_int, name: *const c_char, format: *const c_char, ...);
    fn ferrovpn_plugin_vlog(
        flags: c_int,
        name: *const c_char,
        format: *const c_char,
        args: *mut c_void,
    );
    fn ferrovpn_plugin_set_log_sink(sink: LogSink);
}

/// `struct openvpn_plugin_callbacks`.
#[repr(C)]
struct Callbacks {
    log: LogFn,
    vlog: VlogFn,
    secure_memzero: unsafe extern "C" fn(*mut c_void, usize),
    base64_encode: unsafe extern "C" fn(*const c_void, c_int, *mut *mut c_char) -> c_int,
    base64_decode: unsafe extern "C" fn(*const c_char, *mut c_void, c_int) -> c_int,
}

/// `struct openvpn_plugin_args_open_in`.
#[repr(C)]
struct OpenIn {
    type_mask: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
    callbacks: *mut Callbacks,
    ssl_api: c_int,
    ovpn_version: *const c_char,
    ovpn_version_major: c_uint,
    ovpn_version_minor: c_uint,
    ovpn_version_patch: *const c_char,
}

/// `struct openvpn_plugin_args_open_return`.
#[repr(C)]
struct OpenReturn {
    type_mask: c_int,
    handle: *mut c_void,
    return_list: *mut *mut StringList,
}

/// `struct openvpn_plugin_args_func_in`.
#[repr(C)]
struct FuncIn {
    kind: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
    handle: *mut c_void,
    per_client_context: *mut c_void,
    current_cert_depth: c_int,
    current_cert: *mut c_void,
}

/// `struct openvpn_plugin_args_func_return`.
#[repr(C)]
struct FuncReturn {
    return_list: *mut *mut StringList,
}

type OpenV3 = unsafe extern "C" fn(c_int, *const OpenIn, *mut OpenReturn) -> c_int;
type FuncV3 = unsafe extern "C" fn(c_int, *const FuncIn, *mut FuncReturn) -> c_int;
type OpenV2 = unsafe extern "C" fn(
    *mut c_uint,
    *const *const c_char,
    *const *const c_char,
    *mut *mut StringList,
) -> *mut c_void;
type FuncV2 = unsafe extern "C" fn(
    *mut c_void,
    c_int,
    *const *const c_char,
    *const *const c_char,
    *mut c_void,
    *mut *mut StringList,
) -> c_int;
type OpenV1 =
    unsafe extern "C" fn(*mut c_uint, *const *const c_char, *const *const c_char) -> *mut c_void;
type FuncV1 =
    unsafe extern "C" fn(*mut c_void, c_int, *const *const c_char, *const *const c_char) -> c_int;
type CloseV1 = unsafe extern "C" fn(*mut c_void);
/// `openvpn_plugin_client_constructor_v1`: a new per-client context.
type ClientConstructor = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
/// `openvpn_plugin_client_destructor_v1`.
type ClientDestructor = unsafe extern "C" fn(*mut c_void, *mut c_void);
type IntQuery = unsafe extern "C" fn() -> c_int;

#[derive(Clone, Copy)]
enum Func {
    V1(FuncV1),
    V2(FuncV2),
    V3(FuncV3),
}

/// A NULL-terminated array of C strings (`argv`, `envp`). Entries holding
/// a NUL byte cannot be passed and are left out.
struct CStrings {
    _owned: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

impl CStrings {
    fn new<'a>(items: impl IntoIterator<Item = &'a str>) -> Self {
        let owned: Vec<CString> = items
            .into_iter()
            .filter_map(|s| CString::new(s).ok())
            .collect();
        let mut ptrs: Vec<*const c_char> = owned.iter().map(|c| c.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        CStrings {
            _owned: owned,
            ptrs,
        }
    }

    fn as_ptr(&self) -> *const *const c_char {
        self.ptrs.as_ptr()
    }
}

/// A per-client context a plugin's constructor made: opaque to ferrovpn,
/// handed to the plugin's calls for that client and back to its destructor.
/// Not `Clone`: it is destroyed once.
pub struct ClientContextPtr(*mut c_void);

impl ClientContextPtr {
    /// No context (a plugin without constructor, or a call for no client).
    pub fn none() -> Self {
        ClientContextPtr(std::ptr::null_mut())
    }
}

/// One opened plugin.
pub struct Loaded {
    /// The path as configured (the plugin's `argv[0]`).
    name: String,
    handle: *mut c_void,
    type_mask: u32,
    func: Func,
    close: Option<CloseV1>,
    /// `openvpn_plugin_abort_v1`, same signature as close.
    abort: Option<CloseV1>,
    client_constructor: Option<ClientConstructor>,
    client_destructor: Option<ClientDestructor>,
    /// Handed to the plugin at open; it may keep the pointer.
    _callbacks: Box<Callbacks>,
    /// Dropped last: the function pointers above point into it.
    _library: libloading::Library,
}

fn install_log_sink() {
    static ONCE: Once = Once::new();
    // SAFETY: the shim stores the function pointer; `log_sink` is a plain
    // `extern "C"` function that lives as long as the process.
    ONCE.call_once(|| unsafe { ferrovpn_plugin_set_log_sink(log_sink) });
}

/// Where the shim's formatted messages go: ferrovpn's log.
extern "C" fn log_sink(flags: c_int, name: *const c_char, message: *const c_char) {
    let text = |p: *const c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: the shim passes NUL-terminated strings: the plugin's
            // name and its own stack buffer, valid for this call.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let (name, message) = (text(name), text(message));
    if flags & LOG_ERR != 0 {
        error!("PLUGIN {name}: {message}");
    } else if flags & LOG_WARN != 0 {
        warn!("PLUGIN {name}: {message}");
    } else if flags & LOG_NOTE != 0 {
        info!("PLUGIN {name}: {message}");
    } else {
        debug!("PLUGIN {name}: {message}");
    }
}

extern "C" fn secure_memzero(data: *mut c_void, len: usize) {
    if data.is_null() {
        return;
    }
    // SAFETY: the API asks the plugin to pass `len` writable bytes at `data`.
    let bytes = unsafe { std::slice::from_raw_parts_mut(data.cast::<u8>(), len) };
    zeroize::Zeroize::zeroize(bytes);
}

/// Encode `size` bytes at `data`; `*out` gets a `malloc`ed NUL-terminated
/// string the plugin frees. Returns its length, or -1.
extern "C" fn base64_encode(data: *const c_void, size: c_int, out: *mut *mut c_char) -> c_int {
    use base64::Engine;
    let Ok(len) = usize::try_from(size) else {
        return -1;
    };
    if data.is_null() || out.is_null() {
        return -1;
    }
    // SAFETY: the API asks the plugin to pass `size` readable bytes at `data`.
    let input = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
    let text = base64::engine::general_purpose::STANDARD.encode(input);
    let Ok(n) = c_int::try_from(text.len()) else {
        return -1;
    };
    // SAFETY: plain allocation; checked for NULL below.
    let buf = unsafe { libc::malloc(text.len() + 1) }.cast::<u8>();
    if buf.is_null() {
        return -1;
    }
    // SAFETY: `buf` holds text.len() + 1 bytes; `out` is the plugin's
    // pointer to store the result in (checked non-NULL above).
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf, text.len());
        *buf.add(text.len()) = 0;
        *out = buf.cast::<c_char>();
    }
    n
}

/// Decode the NUL-terminated `text` into at most `size` bytes at `data`.
/// Returns the number of bytes, or -1 (bad input, or too long).
extern "C" fn base64_decode(text: *const c_char, data: *mut c_void, size: c_int) -> c_int {
    use base64::Engine;
    let Ok(room) = usize::try_from(size) else {
        return -1;
    };
    if text.is_null() || data.is_null() {
        return -1;
    }
    // SAFETY: the API asks for a NUL-terminated string.
    let input = unsafe { CStr::from_ptr(text) }.to_bytes();
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(input) else {
        return -1;
    };
    if decoded.len() > room {
        return -1;
    }
    // SAFETY: the plugin passes `size` writable bytes at `data`; we write
    // decoded.len() <= size of them.
    unsafe { std::ptr::copy_nonoverlapping(decoded.as_ptr(), data.cast::<u8>(), decoded.len()) };
    c_int::try_from(decoded.len()).unwrap_or(-1)
}

/// Entries of a returned string list kept at most, and bytes of one value
/// (a plugin's answer is untrusted like a script's output).
const MAX_RETURNED: usize = 64;
const MAX_RETURNED_VALUE: usize = 64 * 1024;

/// Copy the name/value pairs of a string list the plugin returned
/// (bounded), before [`free_list`] frees it.
fn copy_list(mut list: *const StringList) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let text = |p: *const c_char| {
        if p.is_null() {
            return String::new();
        }
        // SAFETY: the API has the plugin return NUL-terminated strings in
        // each node; they stay valid until we free the list.
        let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
        String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_RETURNED_VALUE)]).into_owned()
    };
    while !list.is_null() && out.len() < MAX_RETURNED {
        // SAFETY: a node the plugin allocated (see above), not freed yet.
        let node = unsafe { &*list };
        out.push((text(node.name), text(node.value)));
        list = node.next;
    }
    out
}

/// Free a string list the plugin returned (it allocated with `malloc`).
fn free_list(mut list: *mut StringList) {
    // Bounded: a plugin returning a cyclic list would be broken anyway,
    // but this must not loop forever on it.
    for _ in 0..100_000 {
        if list.is_null() {
            return;
        }
        // SAFETY: each node and its strings were allocated by the plugin
        // with malloc and handed to us to free, as the API documents.
        unsafe {
            let next = (*list).next;
            libc::free((*list).name.cast());
            libc::free((*list).value.cast());
            libc::free(list.cast());
            list = next;
        }
    }
}

/// Look up an optional symbol.
fn symbol<T: Copy>(lib: &libloading::Library, name: &[u8]) -> Option<T> {
    // SAFETY: `T` is the function type the API documents for `name`; the
    // pointer stays valid as long as `lib` is loaded, and `Loaded` keeps
    // the library until after its last call.
    unsafe { lib.get::<T>(name) }.ok().map(|s| *s)
}

impl Loaded {
    /// Load the shared object at `path` and open it with `argv` (its
    /// `argv[0]` is the name as configured) and `envp` (`NAME=value`).
    /// `served` is the mask of the hook types ferrovpn calls: a plugin
    /// asking for another one is refused, as 2.6 refuses types it lacks.
    pub fn open(
        path: &Path,
        argv: &[String],
        envp: &[String],
        served: u32,
    ) -> Result<Self, String> {
        install_log_sink();
        // SAFETY: loading a shared object runs its initialisers; the
        // operator configured this plugin to be loaded into the process,
        // exactly as OpenVPN does. RTLD_NOW as 2.6: fail now on missing symbols.
        let library: libloading::Library = unsafe {
            libloading::os::unix::Library::open(Some(path), libloading::os::unix::RTLD_NOW)
        }
        .map_err(|e| {
            format!(
                "PLUGIN_INIT: could not load plugin shared object {}: {e}",
                path.display()
            )
        })?
        .into();
        if let Some(min) = symbol::<IntQuery>(&library, b"openvpn_plugin_min_version_required_v1\0")
        {
            // SAFETY: documented signature `int (void)`.
            let needed = unsafe { min() };
            if needed > API_VERSION {
                return Err(format!(
                    "plugin needs plugin API version {needed}; ferrovpn provides version {API_VERSION}"
                ));
            }
        }
        if let Some(point) =
            symbol::<IntQuery>(&library, b"openvpn_plugin_select_initialization_point_v1\0")
        {
            // SAFETY: documented signature `int (void)`.
            let wanted = unsafe { point() };
            if !INIT_POINTS_SERVED.contains(&wanted) {
                return Err(format!(
                    "plugin asks to be initialised at point {wanted}; ferrovpn opens plugins once at start, before dropping privileges (points 2 and 3)"
                ));
            }
        }
        let name = argv.first().cloned().unwrap_or_default();
        let c_argv = CStrings::new(argv.iter().map(String::as_str));
        let c_envp = CStrings::new(envp.iter().map(String::as_str));
        let mut callbacks = Box::new(Callbacks {
            log: ferrovpn_plugin_log,
            vlog: ferrovpn_plugin_vlog,
            secure_memzero,
            base64_encode,
            base64_decode,
        });
        let close = symbol::<CloseV1>(&library, b"openvpn_plugin_close_v1\0");
        let abort = symbol::<CloseV1>(&library, b"openvpn_plugin_abort_v1\0");
        let client_constructor =
            symbol::<ClientConstructor>(&library, b"openvpn_plugin_client_constructor_v1\0");
        let client_destructor =
            symbol::<ClientDestructor>(&library, b"openvpn_plugin_client_destructor_v1\0");
        // As 2.6, the newest version of each entry point is used, each on
        // its own (Debian's auth-pam has open_v3 but func_v1).
        let func = if let Some(f) = symbol::<FuncV3>(&library, b"openvpn_plugin_func_v3\0") {
            Func::V3(f)
        } else if let Some(f) = symbol::<FuncV2>(&library, b"openvpn_plugin_func_v2\0") {
            Func::V2(f)
        } else if let Some(f) = symbol::<FuncV1>(&library, b"openvpn_plugin_func_v1\0") {
            Func::V1(f)
        } else {
            return Err(
                "PLUGIN_INIT: could not find the required symbol openvpn_plugin_func_v1/v2/v3"
                    .into(),
            );
        };
        let mut returned: *mut StringList = std::ptr::null_mut();
        let (handle, type_mask) = if let Some(open) =
            symbol::<OpenV3>(&library, b"openvpn_plugin_open_v3\0")
        {
            let version = CString::new("2.6.0").unwrap_or_default();
            let patch = CString::new("0").unwrap_or_default();
            let args = OpenIn {
                type_mask: served as c_int,
                argv: c_argv.as_ptr(),
                envp: c_envp.as_ptr(),
                callbacks: &mut *callbacks,
                ssl_api: SSL_API_OPENSSL,
                ovpn_version: version.as_ptr(),
                ovpn_version_major: 2,
                ovpn_version_minor: 6,
                ovpn_version_patch: patch.as_ptr(),
            };
            let mut ret = OpenReturn {
                type_mask: 0,
                handle: std::ptr::null_mut(),
                return_list: &mut returned,
            };
            // SAFETY: documented v3 signature; every pointer in `args`
            // points at data that outlives the call (the callbacks for as
            // long as the plugin is open).
            let rc = unsafe { open(STRUCT_VERSION, &args, &mut ret) };
            free_list(returned);
            if rc != FUNC_SUCCESS {
                return Err("PLUGIN_INIT: plugin initialization function failed".into());
            }
            (ret.handle, ret.type_mask as u32)
        } else {
            let mut mask: c_uint = served;
            let handle = if let Some(open) = symbol::<OpenV2>(&library, b"openvpn_plugin_open_v2\0")
            {
                // SAFETY: documented v2 signature; the arrays are
                // NULL-terminated and outlive the call.
                let h = unsafe { open(&mut mask, c_argv.as_ptr(), c_envp.as_ptr(), &mut returned) };
                free_list(returned);
                h
            } else if let Some(open) = symbol::<OpenV1>(&library, b"openvpn_plugin_open_v1\0") {
                // SAFETY: documented v1 signature, as above.
                unsafe { open(&mut mask, c_argv.as_ptr(), c_envp.as_ptr()) }
            } else {
                return Err(
                    "PLUGIN_INIT: could not find the required symbol openvpn_plugin_open_v1/v2/v3"
                        .into(),
                );
            };
            if handle.is_null() {
                return Err("PLUGIN_INIT: plugin initialization function failed".into());
            }
            (handle, mask)
        };
        let plugin = Loaded {
            name,
            handle,
            type_mask,
            func,
            close,
            abort,
            client_constructor,
            client_destructor,
            _callbacks: callbacks,
            _library: library,
        };
        let unserved = type_mask & !served;
        if unserved != 0 {
            // Dropping `plugin` closes it.
            let pf_note = if unserved & super::mask(super::ENABLE_PF) != 0 {
                " (packet filtering, PLUGIN_ENABLE_PF, was removed in OpenVPN 2.6)"
            } else {
                ""
            };
            return Err(format!(
                "PLUGIN_INIT: plugin expressed interest in plugin types ferrovpn does not call: {}{pf_note}",
                super::hook_names(unserved)
            ));
        }
        Ok(plugin)
    }

    /// Call the plugin's abort function, if it has one (2.6 does on its
    /// way out after a fatal error).
    pub fn abort(&self) {
        if let Some(abort) = self.abort {
            // SAFETY: documented signature `void (openvpn_plugin_handle_t)`,
            // called with the handle from open while the plugin is open.
            unsafe { abort(self.handle) };
        }
    }

    /// Leave the plugin open and loaded for the rest of the process (after
    /// [`Self::abort`]: 2.6 exits without closing its plugins).
    pub fn forget(self) {
        std::mem::forget(self);
    }

    /// The hook types this plugin asked for (`OPENVPN_PLUGIN_MASK` bits).
    pub fn type_mask(&self) -> u32 {
        self.type_mask
    }

    /// Whether the plugin gets certificate objects: it asked for
    /// `PLUGIN_TLS_VERIFY` and has `openvpn_plugin_func_v3` (the v1 and v2
    /// functions have no place for them).
    pub fn takes_certificates(&self) -> bool {
        self.type_mask & super::mask(super::TLS_VERIFY) != 0 && matches!(self.func, Func::V3(_))
    }

    /// Whether the plugin keeps per-client state
    /// (`openvpn_plugin_client_constructor_v1`).
    pub fn has_client_constructor(&self) -> bool {
        self.client_constructor.is_some()
    }

    /// A new per-client context from the plugin's constructor; NULL when
    /// it has none (or its constructor returned NULL).
    pub fn new_client_context(&self) -> ClientContextPtr {
        ClientContextPtr(match self.client_constructor {
            // SAFETY: documented signature `void *(openvpn_plugin_handle_t)`,
            // called with the handle from open while the plugin is open.
            Some(construct) => unsafe { construct(self.handle) },
            None => std::ptr::null_mut(),
        })
    }

    /// Hand a per-client context back to the plugin's destructor. As 2.6,
    /// a NULL context is not handed back.
    pub fn drop_client_context(&self, context: ClientContextPtr) {
        if let Some(destroy) = self.client_destructor
            && !context.0.is_null()
        {
            // SAFETY: documented signature; `context` came from this
            // plugin's constructor and is handed back exactly once (the
            // caller gives up its `ClientContextPtr`).
            unsafe { destroy(self.handle, context.0) };
        }
    }

    /// Call the plugin for hook `kind` with `args` after its name in
    /// `argv`, `envp` and the per-client context `context` (v2 and v3
    /// plugins; NULL for none), and for `PLUGIN_TLS_VERIFY` the certificate
    /// being verified and its depth (v3 plugins; none: NULL and depth -1,
    /// as 2.6 passes for other hooks). Returns `OPENVPN_PLUGIN_FUNC_*` and
    /// the name/value pairs the plugin returned (v2 and v3 plugins).
    pub fn call(
        &self,
        kind: u32,
        args: &[String],
        envp: &[String],
        context: &ClientContextPtr,
        current_cert: Option<(c_int, &super::x509::X509<'_>)>,
    ) -> (c_int, Vec<(String, String)>) {
        let c_argv = CStrings::new(
            std::iter::once(self.name.as_str()).chain(args.iter().map(String::as_str)),
        );
        let c_envp = CStrings::new(envp.iter().map(String::as_str));
        let mut returned: *mut StringList = std::ptr::null_mut();
        let kind = kind as c_int;
        let rc = match self.func {
            Func::V3(func) => {
                let args = FuncIn {
                    kind,
                    argv: c_argv.as_ptr(),
                    envp: c_envp.as_ptr(),
                    handle: self.handle,
                    per_client_context: context.0,
                    current_cert_depth: current_cert.map_or(-1, |(depth, _)| depth),
                    current_cert: current_cert.map_or(std::ptr::null_mut(), |(_, c)| c.as_ptr()),
                };
                let mut ret = FuncReturn {
                    return_list: &mut returned,
                };
                // SAFETY: documented v3 signature; the handle is the one
                // the plugin returned from open, the arrays and the
                // certificate object (borrowed for the call) outlive it.
                unsafe { func(STRUCT_VERSION, &args, &mut ret) }
            }
            Func::V2(func) => {
                // SAFETY: documented v2 signature, as above.
                unsafe {
                    func(
                        self.handle,
                        kind,
                        c_argv.as_ptr(),
                        c_envp.as_ptr(),
                        context.0,
                        &mut returned,
                    )
                }
            }
            // SAFETY: documented v1 signature, as above.
            Func::V1(func) => unsafe { func(self.handle, kind, c_argv.as_ptr(), c_envp.as_ptr()) },
        };
        let list = copy_list(returned);
        free_list(returned);
        (rc, list)
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        if let Some(close) = self.close {
            // SAFETY: documented signature; called once, with the handle
            // from open, before the library is unloaded.
            unsafe { close(self.handle) };
        }
    }
}
