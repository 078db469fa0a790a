//! The `triton-deploy` binary: everything is in the library's [`triton_deploy::app`].

fn main() -> std::process::ExitCode {
    triton_deploy::app::main()
}
