//! Compiles the plugin API's logging shim (variadic C callbacks, which
//! stable Rust cannot define).

fn main() {
    println!("cargo:rerun-if-changed=src/plugin/log_shim.c");
    cc::Build::new()
        .file("src/plugin/log_shim.c")
        .warnings(true)
        .compile("ferrovpn_plugin_log_shim");
}
