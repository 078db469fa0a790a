//! The whole validator on a repository whose configs come from the fuzzer: two models (so that
//! ensemble cross-checks run) sharing the input, each with a version directory. Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use triton_deploy::validate::{Options, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (a, b) = text.split_once("\n---\n").unwrap_or((text, "platform: \"ensemble\""));
    let dir = tempfile::tempdir().unwrap();
    for (name, cfg) in [("a", a), ("b", b)] {
        let m = dir.path().join(name);
        std::fs::create_dir_all(m.join("1")).unwrap();
        std::fs::write(m.join("config.pbtxt"), cfg).unwrap();
        std::fs::write(m.join("1/model.py"), "class TritonPythonModel: pass\n").unwrap();
        std::fs::write(m.join("1/model.onnx"), data).unwrap();
    }
    let report = validate(&[dir.path().to_path_buf()], &Options::default()).unwrap();
    for d in &report.diagnostics {
        let _ = d.to_json(report.source_of(d));
    }
});
