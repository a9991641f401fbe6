/*
 * The logging callbacks of OpenVPN's plugin API v3 are C variadic
 * functions (printf-style), which stable Rust cannot define. This shim
 * formats the message and hands the finished line to a sink that the Rust
 * side registers (src/plugin/ffi.rs). Written for ferrovpn.
 */
#include <stdarg.h>
#include <stdio.h>

typedef void (*ferrovpn_log_sink)(int flags, const char *plugin_name, const char *message);

static ferrovpn_log_sink sink;

void ferrovpn_plugin_set_log_sink(ferrovpn_log_sink s)
{
    sink = s;
}

void ferrovpn_plugin_vlog(int flags, const char *plugin_name, const char *format, va_list args)
{
    char line[1024];
    va_list copy;
    if (!sink || !format) {
        return;
    }
    va_copy(copy, args);
    vsnprintf(line, sizeof line, format, copy);
    va_end(copy);
    sink(flags, plugin_name, line);
}

void ferrovpn_plugin_log(int flags, const char *plugin_name, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    ferrovpn_plugin_vlog(flags, plugin_name, format, args);
    va_end(args);
}
